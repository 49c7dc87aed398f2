// The load generator: request plan, one coroutine per concurrency slot, and per-request
// timing of SSE events as they come off the socket.
#include "bench/loadgen/load_generator.h"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <chrono>
#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/loadgen/sse_parser.h"

namespace tessera::loadgen {
namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using asio::awaitable;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct PlannedRequest {
  double arrival_s = 0;  // since the start of the run
  int input_tokens = 0;
  std::string body;
};

struct RequestResult {
  bool success = false;
  std::string error;
  int input_tokens = 0;
  int output_tokens = 0;
  double ttft_ms = 0;
  double latency_ms = 0;
  std::vector<double> itl_ms;
};

const char* const kWords[] = {
    "the",   "model",    "serves", "tokens", "quickly", "while", "a",     "batch",
    "of",    "requests", "shares", "one",    "cache",   "and",   "every", "stream",
    "gets",  "its",      "answer", "in",     "order",   "with",  "low",   "latency",
    "under", "load",     "from",   "many",   "clients", "at",    "once",  "today"};

int DrawLength(int mean, double ratio, std::mt19937_64& rng) {
  const int low = std::max(1, static_cast<int>(std::floor(mean * (1 - ratio))));
  const int high = std::max(low, static_cast<int>(std::ceil(mean * (1 + ratio))));
  return std::uniform_int_distribution<int>(low, high)(rng);
}

std::vector<PlannedRequest> Plan(const LoadGenOptions& options) {
  std::mt19937_64 rng(options.seed);
  std::exponential_distribution<double> gap(
      std::isinf(options.request_rate) ? 1.0 : options.request_rate);
  std::uniform_int_distribution<size_t> word(0, std::size(kWords) - 1);
  const bool chat = options.endpoint.find("chat/completions") != std::string::npos;
  std::vector<PlannedRequest> plan(options.num_prompts);
  double clock = 0;
  for (PlannedRequest& request : plan) {
    if (!std::isinf(options.request_rate)) clock += gap(rng);
    request.arrival_s = clock;
    request.input_tokens = DrawLength(options.input_len, options.range_ratio, rng);
    const int max_tokens = DrawLength(options.output_len, options.range_ratio, rng);
    std::string prompt;
    for (int i = 0; i < request.input_tokens; ++i) {
      if (i > 0) prompt.push_back(' ');
      prompt += kWords[word(rng)];
    }
    nlohmann::json body = {{"model", options.model}, {"max_tokens", max_tokens},
                           {"stream", true},         {"ignore_eos", true},
                           {"temperature", 0},       {"stream_options", {{"include_usage", true}}}};
    if (chat) {
      body["messages"] = {{{"role", "user"}, {"content", prompt}}};
    } else {
      body["prompt"] = prompt;
    }
    request.body = body.dump();
  }
  return plan;
}

// Text produced by one streamed chunk of a completion or chat completion.
bool CarriesText(const nlohmann::json& event) {
  if (!event.contains("choices") || !event["choices"].is_array() || event["choices"].empty()) {
    return false;
  }
  const nlohmann::json& choice = event["choices"][0];
  if (choice.contains("text") && choice["text"].is_string()) {
    return !choice["text"].get_ref<const std::string&>().empty();
  }
  if (choice.contains("delta") && choice["delta"].contains("content") &&
      choice["delta"]["content"].is_string()) {
    return !choice["delta"]["content"].get_ref<const std::string&>().empty();
  }
  return false;
}

struct Target {
  tcp::endpoint endpoint;
  std::string host_header;
  std::string path;
  Clock::duration timeout;
};

awaitable<RequestResult> RunOne(const Target& target, const PlannedRequest& planned) {
  RequestResult result;
  result.input_tokens = planned.input_tokens;
  auto executor = co_await asio::this_coro::executor;
  auto socket = std::make_shared<tcp::socket>(executor);
  asio::steady_timer deadline(executor);
  deadline.expires_after(target.timeout);
  deadline.async_wait([socket](const error_code& ec) {
    if (ec) return;
    error_code ignored;
    socket->close(ignored);
  });
  auto fail = [&](std::string what, const error_code& ec) {
    result.error = ec ? absl::StrCat(what, ": ", ec.message()) : what;
  };

  const Clock::time_point start = Clock::now();
  std::vector<Clock::time_point> token_times;
  std::optional<int> usage_tokens;
  bool done_marker = false;
  SseParser sse([&](std::string_view data) {
    if (data == "[DONE]") {
      done_marker = true;
      return;
    }
    nlohmann::json event = nlohmann::json::parse(data, nullptr, false);
    if (event.is_discarded()) return;
    if (CarriesText(event)) token_times.push_back(Clock::now());
    if (event.contains("usage") && event["usage"].is_object() &&
        event["usage"].contains("completion_tokens")) {
      usage_tokens = event["usage"]["completion_tokens"].get<int>();
    }
  });

  error_code ec;
  co_await socket->async_connect(target.endpoint, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    fail("connect", ec);
    deadline.cancel();
    co_return result;
  }
  socket->set_option(tcp::no_delay(true), ec);
  http::request<http::string_body> request{http::verb::post, target.path, 11};
  request.set(http::field::host, target.host_header);
  request.set(http::field::content_type, "application/json");
  request.set(http::field::accept, "text/event-stream");
  request.body() = planned.body;
  request.prepare_payload();
  co_await http::async_write(*socket, request, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    fail("write", ec);
    deadline.cancel();
    co_return result;
  }

  http::response_parser<http::string_body> parser;
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  // Chunked bodies go straight to the SSE parser (and are timed) as they arrive.
  auto on_chunk = [&](std::uint64_t, boost::beast::string_view data, error_code&) {
    sse.Feed(std::string_view(data.data(), data.size()));
    return data.size();
  };
  parser.on_chunk_body(on_chunk);
  boost::beast::flat_buffer buffer;
  while (!parser.is_done()) {
    co_await http::async_read_some(*socket, buffer, parser,
                                   asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
  }
  deadline.cancel();
  const Clock::time_point end = Clock::now();
  if (ec) {
    fail(ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor ? "timeout"
                                                                                   : "read",
         ec);
    co_return result;
  }
  const auto& response = parser.get();
  if (response.result_int() != 200) {
    fail(absl::StrCat("HTTP ", response.result_int()), {});
    co_return result;
  }
  if (!parser.chunked()) sse.Feed(response.body());  // a non-chunked stream: no per-event timing
  if (token_times.empty()) {
    fail(done_marker ? "stream produced no tokens" : "stream ended without tokens", {});
    co_return result;
  }
  result.success = true;
  result.output_tokens = usage_tokens.value_or(static_cast<int>(token_times.size()));
  result.ttft_ms = Ms(token_times.front() - start);
  result.latency_ms = Ms(end - start);
  for (size_t i = 1; i < token_times.size(); ++i) {
    result.itl_ms.push_back(Ms(token_times[i] - token_times[i - 1]));
  }
  co_return result;
}

struct Run {
  Target target;
  std::vector<PlannedRequest> plan;
  std::vector<RequestResult> results;
  size_t next = 0;
  int in_flight = 0;
  int max_in_flight = 0;
  Clock::time_point start;
  Clock::time_point last_end;
};

// One concurrency slot: takes requests in arrival order and runs them one at a time, so
// N slots give a FIFO semaphore of N over the Poisson arrivals.
awaitable<void> Slot(Run& run) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (run.next < run.plan.size()) {
    const size_t index = run.next++;
    const PlannedRequest& planned = run.plan[index];
    timer.expires_at(run.start + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(planned.arrival_s)));
    error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    run.max_in_flight = std::max(run.max_in_flight, ++run.in_flight);
    run.results[index] = co_await RunOne(run.target, planned);
    --run.in_flight;
    run.last_end = Clock::now();
  }
}

LoadReport Aggregate(const Run& run) {
  LoadReport report;
  report.duration_s = std::chrono::duration<double>(run.last_end - run.start).count();
  report.max_concurrency_observed = run.max_in_flight;
  std::vector<double> ttft, tpot, itl, e2el;
  for (const RequestResult& result : run.results) {
    if (!result.success) {
      ++report.failed;
      ++report.errors[result.error];
      continue;
    }
    ++report.completed;
    report.total_input_tokens += result.input_tokens;
    report.total_output_tokens += result.output_tokens;
    ttft.push_back(result.ttft_ms);
    e2el.push_back(result.latency_ms);
    if (result.output_tokens > 1) {
      tpot.push_back((result.latency_ms - result.ttft_ms) / (result.output_tokens - 1));
    }
    itl.insert(itl.end(), result.itl_ms.begin(), result.itl_ms.end());
  }
  if (report.duration_s > 0) {
    report.request_throughput = report.completed / report.duration_s;
    report.output_throughput = report.total_output_tokens / report.duration_s;
    report.total_token_throughput =
        (report.total_input_tokens + report.total_output_tokens) / report.duration_s;
  }
  report.ttft_ms = Summarize(std::move(ttft));
  report.tpot_ms = Summarize(std::move(tpot));
  report.itl_ms = Summarize(std::move(itl));
  report.e2el_ms = Summarize(std::move(e2el));
  return report;
}

void PutSummary(nlohmann::json& out, const std::string& name, const LatencySummary& s) {
  out["mean_" + name + "_ms"] = s.mean;
  out["median_" + name + "_ms"] = s.median;
  out["std_" + name + "_ms"] = s.stddev;
  out["p90_" + name + "_ms"] = s.p90;
  out["p99_" + name + "_ms"] = s.p99;
}

void AppendSummary(std::string& out, const std::string& title, const std::string& name,
                   const LatencySummary& s) {
  absl::StrAppendFormat(&out, "%s\n", title);
  absl::StrAppendFormat(&out, "%-40s%.2f\n", "Mean " + name + " (ms):", s.mean);
  absl::StrAppendFormat(&out, "%-40s%.2f\n", "Median " + name + " (ms):", s.median);
  absl::StrAppendFormat(&out, "%-40s%.2f\n", "P90 " + name + " (ms):", s.p90);
  absl::StrAppendFormat(&out, "%-40s%.2f\n", "P99 " + name + " (ms):", s.p99);
}

}  // namespace

absl::Status LoadGenOptions::Validate() const {
  if (host.empty()) return absl::InvalidArgumentError("--host is empty");
  if (endpoint.empty() || endpoint.front() != '/') {
    return absl::InvalidArgumentError("--endpoint must start with '/'");
  }
  if (num_prompts < 1) return absl::InvalidArgumentError("--num-prompts must be at least 1");
  if (!(request_rate > 0)) return absl::InvalidArgumentError("--request-rate must be positive");
  if (max_concurrency < 0) return absl::InvalidArgumentError("--max-concurrency must be >= 0");
  if (input_len < 1 || output_len < 1) {
    return absl::InvalidArgumentError("--input-len and --output-len must be at least 1");
  }
  if (range_ratio < 0 || range_ratio >= 1) {
    return absl::InvalidArgumentError("--range-ratio must be in [0, 1)");
  }
  if (request_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--timeout must be positive");
  }
  return absl::OkStatus();
}

absl::StatusOr<LoadReport> RunLoad(const LoadGenOptions& options) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  asio::io_context io(1);
  tcp::resolver resolver(io);
  error_code ec;
  auto endpoints = resolver.resolve(options.host, std::to_string(options.port),
                                    tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve ", options.host, ": ", ec.message()));
  }
  Run run;
  run.target.endpoint = endpoints.begin()->endpoint();
  run.target.host_header = absl::StrCat(options.host, ":", options.port);
  run.target.path = options.endpoint;
  run.target.timeout = absl::ToChronoNanoseconds(options.request_timeout);
  run.plan = Plan(options);
  run.results.resize(run.plan.size());
  const size_t slots = options.max_concurrency > 0
                           ? std::min<size_t>(options.max_concurrency, run.plan.size())
                           : run.plan.size();
  run.start = Clock::now();
  run.last_end = run.start;
  for (size_t i = 0; i < slots; ++i) asio::co_spawn(io, Slot(run), asio::detached);
  io.run();
  return Aggregate(run);
}

std::string LoadReport::ToJson(const LoadGenOptions& options) const {
  nlohmann::json out = {
      {"endpoint", options.endpoint},
      {"num_prompts", options.num_prompts},
      {"request_rate", std::isinf(options.request_rate) ? nlohmann::json("inf")
                                                        : nlohmann::json(options.request_rate)},
      {"max_concurrency", options.max_concurrency},
      {"input_len", options.input_len},
      {"output_len", options.output_len},
      {"range_ratio", options.range_ratio},
      {"seed", options.seed},
      {"duration", duration_s},
      {"completed", completed},
      {"failed", failed},
      {"total_input_tokens", total_input_tokens},
      {"total_output_tokens", total_output_tokens},
      {"request_throughput", request_throughput},
      {"output_throughput", output_throughput},
      {"total_token_throughput", total_token_throughput},
      {"max_concurrency_observed", max_concurrency_observed},
      {"errors", errors}};
  PutSummary(out, "ttft", ttft_ms);
  PutSummary(out, "tpot", tpot_ms);
  PutSummary(out, "itl", itl_ms);
  PutSummary(out, "e2el", e2el_ms);
  return out.dump(2);
}

std::string LoadReport::ToText() const {
  std::string out = "============ Serving Benchmark Result ============\n";
  absl::StrAppendFormat(&out, "%-40s%d\n", "Successful requests:", completed);
  absl::StrAppendFormat(&out, "%-40s%d\n", "Failed requests:", failed);
  absl::StrAppendFormat(&out, "%-40s%d\n", "Peak concurrent requests:", max_concurrency_observed);
  absl::StrAppendFormat(&out, "%-40s%.2f\n", "Benchmark duration (s):", duration_s);
  absl::StrAppendFormat(&out, "%-40s%d\n", "Total input tokens:", total_input_tokens);
  absl::StrAppendFormat(&out, "%-40s%d\n", "Total generated tokens:", total_output_tokens);
  absl::StrAppendFormat(&out, "%-40s%.2f\n", "Request throughput (req/s):", request_throughput);
  absl::StrAppendFormat(&out, "%-40s%.2f\n", "Output token throughput (tok/s):", output_throughput);
  absl::StrAppendFormat(&out, "%-40s%.2f\n",
                        "Total token throughput (tok/s):", total_token_throughput);
  AppendSummary(out, "---------------Time to First Token----------------", "TTFT", ttft_ms);
  AppendSummary(out, "-----Time per Output Token (excl. 1st token)------", "TPOT", tpot_ms);
  AppendSummary(out, "---------------Inter-token Latency----------------", "ITL", itl_ms);
  AppendSummary(out, "----------------End-to-end Latency----------------", "E2EL", e2el_ms);
  for (const auto& [error, count] : errors)
    absl::StrAppendFormat(&out, "error x%d: %s\n", count, error);
  out += "==================================================\n";
  return out;
}

}  // namespace tessera::loadgen
