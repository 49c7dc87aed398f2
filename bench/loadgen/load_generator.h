// Serving load generator in the spirit of `vllm bench serve`: streams synthetic requests
// to an OpenAI-compatible endpoint (Poisson arrivals and/or a concurrency cap) and
// measures TTFT, TPOT, ITL and end-to-end latency, throughput and errors. One Asio thread
// drives every connection, so a single process can hold thousands of streams.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bench/loadgen/latency_stats.h"

namespace tessera::loadgen {

struct LoadGenOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8000;
  // "/v1/completions" (prompt) or ".../chat/completions" (messages).
  std::string endpoint = "/v1/completions";
  std::string model = "tessera";
  int num_prompts = 100;
  double request_rate = std::numeric_limits<double>::infinity();  // req/s, Poisson
  int max_concurrency = 0;                                        // 0: no cap
  // Synthetic lengths: each request draws uniformly from len * [1 - ratio, 1 + ratio].
  int input_len = 128;   // prompt words (about one token each)
  int output_len = 128;  // max_tokens, with ignore_eos so the server produces them all
  double range_ratio = 0;
  uint64_t seed = 0;
  absl::Duration request_timeout = absl::Minutes(10);

  absl::Status Validate() const;
};

struct LoadReport {
  double duration_s = 0;
  int completed = 0;
  int failed = 0;
  int64_t total_input_tokens = 0;
  int64_t total_output_tokens = 0;
  double request_throughput = 0;      // completed requests / s
  double output_throughput = 0;       // output tokens / s
  double total_token_throughput = 0;  // (input + output) tokens / s
  int max_concurrency_observed = 0;
  LatencySummary ttft_ms, tpot_ms, itl_ms, e2el_ms;
  std::map<std::string, int> errors;  // error text -> count

  // JSON with vLLM's result keys (mean_ttft_ms, p99_itl_ms, ...).
  std::string ToJson(const LoadGenOptions& options) const;
  // The human-readable table.
  std::string ToText() const;
};

// Runs the whole benchmark; fails only on invalid options or an unresolvable host
// (request failures are counted in the report).
absl::StatusOr<LoadReport> RunLoad(const LoadGenOptions& options);

}  // namespace tessera::loadgen
