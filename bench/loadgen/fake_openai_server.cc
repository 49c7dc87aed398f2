// tessera-fake-sse-server: an OpenAI-style streaming endpoint on tessera_http with no model.
// One "engine" thread emits one token to every open stream per step, as a batching engine
// does, so tessera-loadgen can measure what the transport adds to the step time.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/synchronization/mutex.h"
#include "server/http/http_server.h"

namespace {

using tessera::http::HttpRequest;
using tessera::http::ResponseWriter;

struct Stream {
  std::shared_ptr<ResponseWriter> writer;
  int remaining = 0;
  int produced = 0;
  bool chat = false;
};

class FakeEngine {
 public:
  void Add(Stream stream) {
    absl::MutexLock lock(&mu_);
    incoming_.push_back(std::move(stream));
  }

  // One token per open stream per step; finished or abandoned streams are dropped.
  void Step() {
    {
      absl::MutexLock lock(&mu_);
      for (Stream& s : incoming_) running_.push_back(std::move(s));
      incoming_.clear();
    }
    std::vector<Stream> still_running;
    for (Stream& s : running_) {
      if (s.writer->closed()) continue;
      nlohmann::json choice = s.chat ? nlohmann::json{{"index", 0}, {"delta", {{"content", "tok"}}}}
                                     : nlohmann::json{{"index", 0}, {"text", "tok"}};
      s.writer->SendEvent(nlohmann::json{{"object", "text_completion"},
                                         {"choices", nlohmann::json::array({choice})}}
                              .dump());
      ++s.produced;
      if (--s.remaining > 0) {
        still_running.push_back(std::move(s));
        continue;
      }
      s.writer->SendEvent(nlohmann::json{{"choices", nlohmann::json::array()},
                                         {"usage", {{"completion_tokens", s.produced}}}}
                              .dump());
      s.writer->SendEvent("[DONE]");
      s.writer->EndStream();
    }
    running_ = std::move(still_running);
  }

 private:
  absl::Mutex mu_;
  std::vector<Stream> incoming_ ABSL_GUARDED_BY(mu_);
  std::vector<Stream> running_;  // engine thread only
};

int Usage(const char* message) {
  std::fprintf(stderr,
               "tessera-fake-sse-server: %s\n"
               "usage: tessera-fake-sse-server [--port P] [--step-ms MS] [--threads N]\n",
               message);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0, threads = 2;
  double step_ms = 10;
  for (int i = 1; i < argc; i += 2) {
    std::string flag = argv[i];
    if (i + 1 >= argc) return Usage("every flag needs a value");
    std::string value = argv[i + 1];
    bool ok = flag == "--port"      ? absl::SimpleAtoi(value, &port)
              : flag == "--threads" ? absl::SimpleAtoi(value, &threads)
              : flag == "--step-ms" ? absl::SimpleAtod(value, &step_ms)
                                    : false;
    if (!ok) return Usage(("bad flag or value: " + flag + " " + value).c_str());
  }
  if (port < 0 || port > 65535 || !(step_ms > 0)) return Usage("bad --port or --step-ms");

  // SIGINT/SIGTERM are taken synchronously below; block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  tessera::http::HttpServerOptions options;
  options.port = static_cast<uint16_t>(port);
  options.num_threads = threads;
  options.access_log = nullptr;
  tessera::http::HttpServer server(options);
  FakeEngine engine;
  for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
    const bool chat = std::string(path).find("chat") != std::string::npos;
    absl::Status status = server.Handle(
        "POST", path,
        [&engine, chat](const HttpRequest& request, std::shared_ptr<ResponseWriter> writer) {
          nlohmann::json body = nlohmann::json::parse(request.body, nullptr, false);
          if (body.is_discarded() || !body.contains("max_tokens") ||
              !body["max_tokens"].is_number_integer()) {
            tessera::http::WriteJsonError(writer, 400, "expected JSON with max_tokens",
                                          "invalid_request_error");
            return;
          }
          writer->StartStream();
          engine.Add(
              Stream{std::move(writer), std::max(1, body["max_tokens"].get<int>()), 0, chat});
        });
    if (!status.ok()) return Usage(std::string(status.message()).c_str());
  }
  if (absl::Status status = server.Start(); !status.ok()) {
    std::fprintf(stderr, "tessera-fake-sse-server: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  std::printf("listening http 127.0.0.1:%d\n", server.port());
  std::fflush(stdout);

  std::atomic<bool> stop{false};
  std::thread stepper([&] {
    const auto step = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double, std::milli>(step_ms));
    auto next = std::chrono::steady_clock::now();
    while (!stop.load()) {
      next += step;
      engine.Step();
      std::this_thread::sleep_until(next);  // a fixed step clock, like a GPU step
    }
  });
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  stop = true;
  stepper.join();
  server.Shutdown(absl::Now() + absl::Seconds(2));
  return 0;
}
