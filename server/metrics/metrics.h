// Serving metrics in Prometheus form (prometheus-cpp): request outcomes, tokens, latency
// histograms per (model, adapter), and engine gauges refreshed at scrape time.
#pragma once

#include <memory>
#include <mutex>
#include <functional>
#include <string>
#include <vector>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace tessera {

struct EngineStats;
struct StepInfo;

class ServingMetrics {
 public:
  explicit ServingMetrics(std::string model_name);

  // outcome: "stop" | "length" | "abort" | "error" | "rejected"
  void RecordRequest(const std::string& adapter, const std::string& outcome);
  void RecordCompletion(const std::string& adapter, int prompt_tokens, int generated_tokens, double ttft_s,
                        double tpot_s, double e2e_s);
  void RecordStep(const StepInfo& step);
  // Copies the engine's gauges (queue, running, KV usage, prefix hits, preemptions).
  void Refresh(const EngineStats& stats);
  // Runs before every Serialize (e.g. to copy drift statistics into gauges).
  void AddCollector(std::function<void()> collector) { collectors_.push_back(std::move(collector)); }
  // The Prometheus text exposition of everything registered here.
  std::string Serialize();
  prometheus::Registry& registry() { return *registry_; }

 private:
  std::string model_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Counter>& prompt_tokens_;
  prometheus::Family<prometheus::Counter>& generation_tokens_;
  prometheus::Family<prometheus::Histogram>& ttft_;
  prometheus::Family<prometheus::Histogram>& tpot_;
  prometheus::Family<prometheus::Histogram>& e2e_;
  prometheus::Histogram& step_;
  // By kind ("graph": decode graphs replayed; "eager"): steps, their seconds, the part spent
  // in forwards and sampling (waiting for the device), and the tokens they fed.
  prometheus::Family<prometheus::Counter>& steps_;
  prometheus::Family<prometheus::Counter>& step_seconds_;
  prometheus::Family<prometheus::Counter>& forward_seconds_;
  prometheus::Family<prometheus::Counter>& host_seconds_;
  prometheus::Family<prometheus::Counter>& device_seconds_;
  prometheus::Family<prometheus::Counter>& step_tokens_;
  prometheus::Gauge& waiting_;
  prometheus::Gauge& running_;
  prometheus::Gauge& kv_usage_;
  prometheus::Gauge& prefix_hit_;
  prometheus::Counter& preemptions_;
  std::mutex mu_;
  // Held while a step's counters move and while a scrape reads them, so one scrape sees
  // whole steps (its launch seconds never run ahead of its forward seconds).
  std::mutex step_mu_;
  int64_t preemptions_seen_ = 0;
  std::vector<std::function<void()>> collectors_;
};

}  // namespace tessera
