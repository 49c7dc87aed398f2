#include "server/core/serving_context.h"

#include <future>
#include <memory>

#include "absl/strings/str_cat.h"

namespace tessera {

absl::Status ServerOptions::Validate() const {
  if (served_model_name.empty()) return absl::InvalidArgumentError("--served-model-name must not be empty");
  if (max_waiting < 0) return absl::InvalidArgumentError("--max-waiting must not be negative");
  if (max_n < 1) return absl::InvalidArgumentError("the cap on n must be at least 1");
  if (drain_timeout_s < 0) return absl::InvalidArgumentError("--drain-timeout must not be negative");
  return absl::OkStatus();
}

ServingContext::ServingContext(Engine* engine, const Tokenizer* tokenizer, ChatTemplateKind chat_template,
                               ServerOptions options, ServingMetrics* metrics)
    : engine_(engine), tokenizer_(tokenizer), chat_template_(chat_template), options_(std::move(options)), metrics_(metrics) {}

namespace {

struct Tracker {
  using Clock = std::chrono::steady_clock;
  Clock::time_point start = Clock::now();
  Clock::time_point first;
  bool have_first = false;
  FinishedRequestInfo info;
};

}  // namespace

absl::StatusOr<uint64_t> ServingContext::Submit(GenerationRequest request, OutputCallback callback) {
  const std::string adapter = request.adapter;
  if (draining_) {
    metrics_->RecordRequest(adapter, "rejected");
    return absl::UnavailableError("the server is draining and accepts no new requests");
  }
  const EngineStats stats = engine_->Stats();
  if (stats.num_waiting >= options_.max_waiting) {
    metrics_->RecordRequest(adapter, "rejected");
    return absl::ResourceExhaustedError(absl::StrCat("too many requests are queued (", stats.num_waiting,
                                                     "); retry later"));
  }
  if (collect_stats_) request.sampling.collect_stats = true;
  auto tracker = std::make_shared<Tracker>();
  tracker->info.adapter = adapter;
  tracker->info.prompt_tokens = static_cast<int32_t>(request.prompt_ids.size());
  auto wrapped = [this, tracker, cb = std::move(callback)](RequestOutput out) {
    Tracker& t = *tracker;
    if (!t.have_first && !out.token_ids.empty()) {
      t.have_first = true;
      t.first = Tracker::Clock::now();
    }
    t.info.output_ids.insert(t.info.output_ids.end(), out.token_ids.begin(), out.token_ids.end());
    t.info.samples.insert(t.info.samples.end(), out.logprobs.begin(), out.logprobs.end());
    if (out.finished) {
      const auto now = Tracker::Clock::now();
      const double e2e = std::chrono::duration<double>(now - t.start).count();
      const double ttft = t.have_first ? std::chrono::duration<double>(t.first - t.start).count() : -1.0;
      const int n = out.usage.completion_tokens;
      const double tpot = (t.have_first && n > 1) ? std::chrono::duration<double>(now - t.first).count() / (n - 1) : -1.0;
      metrics_->RecordRequest(t.info.adapter, out.finish_reason);
      if (out.finish_reason != "error") {
        metrics_->RecordCompletion(t.info.adapter, out.usage.prompt_tokens, n, ttft, tpot, e2e);
      }
      t.info.finish_reason = out.finish_reason;
      if (finished_observer_ && out.finish_reason != "error") finished_observer_(t.info);
    }
    if (cb) cb(std::move(out));
  };
  auto id = engine_->Submit(std::move(request), std::move(wrapped));
  if (!id.ok()) metrics_->RecordRequest(adapter, "rejected");
  return id;
}

absl::StatusOr<uint64_t> ServingContext::ResolveModel(const std::string& name) const {
  if (name == options_.served_model_name) return 0;
  if (resolve_adapter_) {
    auto id = resolve_adapter_(name);
    if (id.ok()) return id;
  }
  return absl::NotFoundError(absl::StrCat("The model '", name, "' does not exist"));
}

absl::Status ServingContext::RunReadinessProbe() {
  GenerationRequest probe;
  probe.prompt_ids = tokenizer_->Encode("Hello", tokenizer_->add_bos());
  probe.max_tokens = 1;
  probe.sampling.temperature = 0.0f;
  probe.ignore_eos = true;
  auto done = std::make_shared<std::promise<RequestOutput>>();
  auto future = done->get_future();
  auto id = engine_->Submit(probe, [done](RequestOutput o) {
    if (o.finished) done->set_value(std::move(o));
  });
  if (!id.ok()) return id.status();
  RequestOutput out = future.get();
  if (!out.status.ok()) return out.status;
  if (out.usage.completion_tokens != 1)
    return absl::InternalError("the readiness probe produced no token");
  probe_ok_ = true;
  return absl::OkStatus();
}

}  // namespace tessera
