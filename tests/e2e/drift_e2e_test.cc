// Drift end to end: capture a baseline from short prompts, then long prompts move the
// prompt-length PSI and KS p-value on /metrics; the baseline's own traffic does not.
#include <filesystem>
#include <random>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/server_process.h"
#include "tests/http/test_client.h"

namespace tessera {
namespace {

using http::testing::BuildRequest;
using http::testing::TestClient;
using json = nlohmann::json;

constexpr int kWindow = 200;

http::testing::Response Call(int port, const std::string& method, const std::string& path, const std::string& body = {}) {
  auto client = TestClient::Connect(static_cast<uint16_t>(port), 60);
  EXPECT_TRUE(client.ok());
  auto r = client->RoundTrip(BuildRequest(method, path, body));
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : http::testing::Response{};
}

std::vector<std::string> Prompts(int min_words, int max_words, uint32_t seed) {
  const char* words[] = {"the", "cat", "saw", "a", "big", "red", "ball", "and", "ran", "home", "to", "mom"};
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> len(min_words, max_words), w(0, 11);
  std::vector<std::string> out;
  for (int i = 0; i < kWindow; ++i) {
    std::string p;
    for (int k = len(rng); k > 0; --k) p += std::string(p.empty() ? "" : " ") + words[w(rng)];
    out.push_back(p);
  }
  return out;
}

void SendAll(int port, const std::vector<std::string>& prompts) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = t; i < prompts.size(); i += 8) {
        json body = {{"model", "stories260k"}, {"prompt", prompts[i]}, {"max_tokens", 4}, {"temperature", 0}};
        EXPECT_EQ(Call(port, "POST", "/v1/completions", body.dump()).status(), 200);
      }
    });
  }
  for (auto& t : threads) t.join();
}

json Stats(int port) { return json::parse(Call(port, "GET", "/v1/drift").body); }

// Waits until the monitor has taken in `processed` requests.
void WaitProcessed(int port, int64_t processed) {
  for (int i = 0; i < 2000; ++i) {
    json s = Stats(port);
    if (s.value("processed", int64_t{0}) >= processed) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  FAIL() << "drift monitor did not catch up: " << Stats(port).dump();
}

double Gauge(const std::string& metrics, const std::string& name, const std::string& feature) {
  std::istringstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name + "{", 0) == 0 && line.find("feature=\"" + feature + "\"") != std::string::npos)
      return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return std::nan("");
}

TEST(DriftE2ETest, LongPromptsRaisePsiAndKsWhileBaselineTrafficDoesNot) {
  testing::ServerProcess server;
  ASSERT_TRUE(server.Start({"--drift-reference-size", std::to_string(kWindow), "--drift-live-size",
                            std::to_string(kWindow), "--max-num-seqs", "32"}))
      << server.output();
  const int port = server.http_port();
  auto cap = Call(port, "POST", "/v1/drift/baseline", R"({"mode":"next"})");
  ASSERT_EQ(cap.status(), 200) << cap.body;
  const auto short_prompts = Prompts(2, 8, 1);
  SendAll(port, short_prompts);
  WaitProcessed(port, kWindow);
  json s = Stats(port);
  ASSERT_EQ(s["models"].size(), 1u) << s.dump();
  EXPECT_TRUE(s["models"][0]["has_baseline"]);
  EXPECT_EQ(s["models"][0]["reference_count"], kWindow);

  SendAll(port, Prompts(40, 80, 2));
  WaitProcessed(port, 2 * kWindow);
  std::string metrics = Call(port, "GET", "/metrics").body;
  EXPECT_GT(Gauge(metrics, "tessera_drift_psi", "prompt_length"), 0.25) << metrics;
  EXPECT_LT(Gauge(metrics, "tessera_drift_ks_pvalue", "prompt_length"), 0.01);
  EXPECT_GT(Gauge(metrics, "tessera_drift_ks", "prompt_length"), 0.5);

  SendAll(port, short_prompts);
  WaitProcessed(port, 3 * kWindow);
  metrics = Call(port, "GET", "/metrics").body;
  EXPECT_LT(Gauge(metrics, "tessera_drift_psi", "prompt_length"), 0.1) << metrics;
  EXPECT_GT(Gauge(metrics, "tessera_drift_ks_pvalue", "prompt_length"), 0.01);
  EXPECT_EQ(server.Stop(SIGTERM), 0);
}

TEST(DriftE2ETest, BaselinesSurviveARestartAndAdminRoutesNeedTheToken) {
  const std::string dir = ::testing::TempDir() + "/drift_restart_" + std::to_string(::getpid());
  {
    testing::ServerProcess server;
    ASSERT_TRUE(server.Start({"--drift-reference-size", "20", "--drift-dir", dir, "--admin-token", "s3cret"}));
    EXPECT_EQ(Call(server.http_port(), "POST", "/v1/drift/baseline", "{}").status(), 401);
    auto client = TestClient::Connect(static_cast<uint16_t>(server.http_port()), 30);
    auto r = client->RoundTrip(BuildRequest("POST", "/v1/drift/baseline", "{}", {{"Authorization", "Bearer s3cret"}}));
    ASSERT_EQ(r->status(), 200) << r->body;
    SendAll(server.http_port(), Prompts(2, 8, 3));
    EXPECT_EQ(server.Stop(SIGTERM), 0);
  }
  testing::ServerProcess again;
  ASSERT_TRUE(again.Start({"--drift-reference-size", "20", "--drift-dir", dir}));
  json s = Stats(again.http_port());
  ASSERT_EQ(s["models"].size(), 1u) << s.dump();
  EXPECT_TRUE(s["models"][0]["has_baseline"]);
  EXPECT_EQ(s["models"][0]["reference_count"], 20);
  EXPECT_EQ(again.Stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tessera
