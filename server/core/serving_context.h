// What every transport shares: the engine, tokenizer and metrics of the served model,
// admission control (draining, back-pressure), and request tracking for metrics.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/engine/engine.h"
#include "runtime/tokenizer/chat_template.h"
#include "runtime/tokenizer/tokenizer.h"
#include "server/metrics/metrics.h"

namespace tessera {

struct ServerOptions {
  std::string served_model_name = "default";
  int32_t max_waiting = 512;        // queued requests beyond which new ones get 429
  int32_t max_n = 8;                // cap for OpenAI's `n`
  int32_t default_max_tokens = 16;  // OpenAI's default for completions
  double drain_timeout_s = 30.0;
  absl::Status Validate() const;
};

// Per-request observation hook (drift monitoring): called once when a request finishes.
struct FinishedRequestInfo {
  std::string adapter;
  int32_t prompt_tokens = 0;
  std::vector<int32_t> output_ids;
  std::vector<SampleResult> samples;  // when logprobs were recorded
  std::string finish_reason;
};

class ServingContext {
 public:
  ServingContext(Engine* engine, const Tokenizer* tokenizer, ChatTemplateKind chat_template, ServerOptions options,
                 ServingMetrics* metrics);

  const ServerOptions& options() const { return options_; }
  const std::string& model_name() const { return options_.served_model_name; }
  Engine& engine() { return *engine_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  ChatTemplateKind chat_template() const { return chat_template_; }
  ServingMetrics& metrics() { return *metrics_; }

  // Admission (draining -> Unavailable, queue full -> ResourceExhausted), then submits;
  // the callback additionally feeds the metrics. `adapter` labels metrics.
  absl::StatusOr<uint64_t> Submit(GenerationRequest request, OutputCallback callback);
  void Cancel(uint64_t id) { engine_->Cancel(id); }

  // Draining: new requests are refused; in-flight ones continue.
  void StartDraining() { draining_ = true; }
  bool draining() const { return draining_; }
  // Ready: the startup probe generated a token and the server is not draining.
  bool ready() const { return probe_ok_ && !draining_; }
  // Generates one real token through the engine; sets readiness.
  absl::Status RunReadinessProbe();

  // Model names other than the base model resolve to LoRA adapters through this.
  void SetAdapterResolver(std::function<absl::StatusOr<uint64_t>(const std::string&)> resolver) {
    resolve_adapter_ = std::move(resolver);
  }
  void SetAdapterLister(std::function<std::vector<std::string>()> lister) { list_adapters_ = std::move(lister); }
  // The adapter id a model name selects: 0 for the served model, NotFound for unknown names.
  absl::StatusOr<uint64_t> ResolveModel(const std::string& name) const;
  std::vector<std::string> AdapterNames() const { return list_adapters_ ? list_adapters_() : std::vector<std::string>(); }

  // Drift monitoring and similar observers of finished requests (called on the engine
  // thread: must not block). With needs_token_stats every request collects per-token
  // distribution statistics (entropy, top-1 probability, logprob) for it.
  void SetFinishedObserver(std::function<void(const FinishedRequestInfo&)> observer, bool needs_token_stats) {
    finished_observer_ = std::move(observer);
    collect_stats_ = needs_token_stats;
  }

 private:
  Engine* engine_;
  const Tokenizer* tokenizer_;
  ChatTemplateKind chat_template_;
  ServerOptions options_;
  ServingMetrics* metrics_;
  std::atomic<bool> draining_{false};
  std::atomic<bool> probe_ok_{false};
  std::function<void(const FinishedRequestInfo&)> finished_observer_;
  bool collect_stats_ = false;
  std::function<absl::StatusOr<uint64_t>(const std::string&)> resolve_adapter_;
  std::function<std::vector<std::string>()> list_adapters_;
};

}  // namespace tessera
