#include "server/metrics/metrics.h"

#include "prometheus/text_serializer.h"
#include "runtime/engine/engine.h"

namespace tessera {
namespace {

prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0};
}

}  // namespace

ServingMetrics::ServingMetrics(std::string model_name)
    : model_(std::move(model_name)),
      registry_(std::make_shared<prometheus::Registry>()),
      requests_(prometheus::BuildCounter().Name("tessera_requests_total").Help("Finished requests by outcome").Register(*registry_)),
      prompt_tokens_(prometheus::BuildCounter().Name("tessera_prompt_tokens_total").Help("Prompt tokens processed").Register(*registry_)),
      generation_tokens_(prometheus::BuildCounter().Name("tessera_generation_tokens_total").Help("Tokens generated").Register(*registry_)),
      ttft_(prometheus::BuildHistogram().Name("tessera_time_to_first_token_seconds").Help("Time to first token").Register(*registry_)),
      tpot_(prometheus::BuildHistogram().Name("tessera_time_per_output_token_seconds").Help("Mean time per output token after the first").Register(*registry_)),
      e2e_(prometheus::BuildHistogram().Name("tessera_e2e_request_latency_seconds").Help("End-to-end request latency").Register(*registry_)),
      step_(prometheus::BuildHistogram().Name("tessera_engine_step_seconds").Help("Duration of one engine step").Register(*registry_).Add({{"model", model_}}, LatencyBuckets())),
      steps_(prometheus::BuildCounter().Name("tessera_engine_steps_total").Help("Engine steps by kind (graph: replayed decode graphs; eager)").Register(*registry_)),
      step_seconds_(prometheus::BuildCounter().Name("tessera_engine_step_seconds_total").Help("Seconds in engine steps by kind").Register(*registry_)),
      forward_seconds_(prometheus::BuildCounter().Name("tessera_engine_forward_seconds_total").Help("Seconds of engine steps spent in forwards and sampling (launching and waiting for the device); the rest is host work: scheduling, batch building, outputs").Register(*registry_)),
      host_seconds_(prometheus::BuildCounter().Name("tessera_engine_host_seconds_total").Help("Seconds of host work by kind of step and phase (schedule; update: recording the sampled tokens; outputs: detokenizing, stop strings, hand-over, which runs during the next forward when outputs overlap; launch: building batches and enqueueing forwards, inside the forward seconds)").Register(*registry_)),
      device_seconds_(prometheus::BuildCounter().Name("tessera_engine_device_seconds_total").Help("Device time of engine steps, from a step's first forward command to its sampling's end, gaps in the queue included (backends that queue work: CUDA)").Register(*registry_)),
      step_tokens_(prometheus::BuildCounter().Name("tessera_engine_step_tokens_total").Help("Tokens fed to the model by kind of step").Register(*registry_)),
      waiting_(prometheus::BuildGauge().Name("tessera_num_requests_waiting").Help("Requests queued").Register(*registry_).Add({{"model", model_}})),
      running_(prometheus::BuildGauge().Name("tessera_num_requests_running").Help("Sequences running").Register(*registry_).Add({{"model", model_}})),
      kv_usage_(prometheus::BuildGauge().Name("tessera_kv_cache_usage_ratio").Help("Fraction of KV blocks in use").Register(*registry_).Add({{"model", model_}})),
      prefix_hit_(prometheus::BuildGauge().Name("tessera_prefix_cache_hit_ratio").Help("Prompt tokens served from the prefix cache / prompt tokens looked up").Register(*registry_).Add({{"model", model_}})),
      preemptions_(prometheus::BuildCounter().Name("tessera_num_preemptions_total").Help("Sequences preempted for lack of KV blocks").Register(*registry_).Add({{"model", model_}})) {}

void ServingMetrics::RecordRequest(const std::string& adapter, const std::string& outcome) {
  requests_.Add({{"model", model_}, {"adapter", adapter}, {"outcome", outcome}}).Increment();
}

void ServingMetrics::RecordCompletion(const std::string& adapter, int prompt_tokens, int generated_tokens, double ttft_s,
                                      double tpot_s, double e2e_s) {
  const prometheus::Labels labels = {{"model", model_}, {"adapter", adapter}};
  prompt_tokens_.Add(labels).Increment(prompt_tokens);
  generation_tokens_.Add(labels).Increment(generated_tokens);
  if (ttft_s >= 0) ttft_.Add(labels, LatencyBuckets()).Observe(ttft_s);
  if (tpot_s >= 0) tpot_.Add(labels, LatencyBuckets()).Observe(tpot_s);
  e2e_.Add(labels, LatencyBuckets()).Observe(e2e_s);
}

void ServingMetrics::RecordStep(const StepInfo& step) {
  std::lock_guard<std::mutex> lock(step_mu_);
  step_.Observe(step.seconds);
  const prometheus::Labels labels = {{"model", model_}, {"kind", step.graph ? "graph" : "eager"}};
  steps_.Add(labels).Increment();
  step_seconds_.Add(labels).Increment(step.seconds);
  forward_seconds_.Add(labels).Increment(step.forward_seconds);
  step_tokens_.Add(labels).Increment(step.batched_tokens);
  const char* kind = step.graph ? "graph" : "eager";
  host_seconds_.Add({{"model", model_}, {"kind", kind}, {"phase", "schedule"}}).Increment(step.schedule_seconds);
  host_seconds_.Add({{"model", model_}, {"kind", kind}, {"phase", "update"}}).Increment(step.update_seconds);
  host_seconds_.Add({{"model", model_}, {"kind", kind}, {"phase", "outputs"}}).Increment(step.outputs_seconds);
  host_seconds_.Add({{"model", model_}, {"kind", kind}, {"phase", "launch"}}).Increment(step.launch_seconds);
  if (step.device_seconds >= 0) device_seconds_.Add(labels).Increment(step.device_seconds);
}

void ServingMetrics::Refresh(const EngineStats& stats) {
  waiting_.Set(stats.num_waiting);
  running_.Set(stats.num_running);
  kv_usage_.Set(stats.kv.usage());
  prefix_hit_.Set(stats.kv.prefix_hit_rate);
  std::lock_guard<std::mutex> lock(mu_);
  if (stats.num_preemptions_total > preemptions_seen_) {
    preemptions_.Increment(static_cast<double>(stats.num_preemptions_total - preemptions_seen_));
    preemptions_seen_ = stats.num_preemptions_total;
  }
}

std::string ServingMetrics::Serialize() {
  for (const auto& c : collectors_) c();
  std::vector<prometheus::MetricFamily> families;
  {
    std::lock_guard<std::mutex> lock(step_mu_);
    families = registry_->Collect();
  }
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace tessera
