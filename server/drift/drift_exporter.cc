#include "server/drift/drift_exporter.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/core/status_mapping.h"

namespace tessera {

using json = nlohmann::json;

DriftExporter::DriftExporter(drift::DriftMonitor* monitor, ServingContext* ctx, const AdminAuth* auth, int32_t vocab_size)
    : monitor_(monitor),
      ctx_(ctx),
      auth_(auth),
      vocab_size_(vocab_size),
      ks_(prometheus::BuildGauge().Name("tessera_drift_ks").Help("Two-sample KS statistic, reference vs live").Register(ctx->metrics().registry())),
      ks_pvalue_(prometheus::BuildGauge().Name("tessera_drift_ks_pvalue").Help("KS p-value, reference vs live").Register(ctx->metrics().registry())),
      psi_(prometheus::BuildGauge().Name("tessera_drift_psi").Help("Population Stability Index, reference vs live").Register(ctx->metrics().registry())),
      kl_(prometheus::BuildGauge().Name("tessera_drift_kl").Help("KL(live || reference), smoothed").Register(ctx->metrics().registry())),
      samples_(prometheus::BuildGauge().Name("tessera_drift_samples").Help("Requests in each drift window").Register(ctx->metrics().registry())),
      dropped_(prometheus::BuildGauge().Name("tessera_drift_dropped_total").Help("Observations dropped because the drift queue was full").Register(ctx->metrics().registry())) {}

void DriftExporter::Attach() {
  const std::string model = ctx_->model_name();
  const int32_t vocab = vocab_size_;
  drift::DriftMonitor* monitor = monitor_;
  ctx_->SetFinishedObserver(
      [model, vocab, monitor](const FinishedRequestInfo& info) {
        if (info.finish_reason == "abort") return;  // cut short by the client, not by the model
        drift::RequestFeatureBuilder b(vocab);
        for (size_t i = 0; i < info.output_ids.size(); ++i) {
          const SampleResult* s = i < info.samples.size() ? &info.samples[i] : nullptr;
          b.AddToken(info.output_ids[i], s ? s->logprob : 0.0, s ? s->entropy : 0.0, s ? s->top1_prob : 0.0);
        }
        monitor->Observe(b.Finish(model, info.adapter, info.prompt_tokens, info.finish_reason));
      },
      /*needs_token_stats=*/true);
}

void DriftExporter::Refresh() {
  drift::DriftSnapshot snap = monitor_->Snapshot();
  dropped_.Add({}).Set(static_cast<double>(snap.dropped));
  for (const drift::ModelDrift& m : snap.models) {
    samples_.Add({{"model", m.model}, {"adapter", m.adapter}, {"window", "reference"}}).Set(static_cast<double>(m.reference_count));
    samples_.Add({{"model", m.model}, {"adapter", m.adapter}, {"window", "live"}}).Set(static_cast<double>(m.live_count));
    for (const drift::FeatureDrift& f : m.features) {
      const prometheus::Labels labels = {{"model", m.model}, {"adapter", m.adapter}, {"feature", f.feature}};
      if (f.numeric && !std::isnan(f.ks)) ks_.Add(labels).Set(f.ks);
      if (f.numeric && !std::isnan(f.ks_pvalue)) ks_pvalue_.Add(labels).Set(f.ks_pvalue);
      if (!std::isnan(f.psi)) psi_.Add(labels).Set(f.psi);
      if (!std::isnan(f.kl)) kl_.Add(labels).Set(f.kl);
    }
  }
}

absl::StatusOr<std::string> DriftExporter::Capture(const std::string& model, const std::string& adapter,
                                                   const std::string& mode) {
  drift::CaptureMode m;
  if (mode.empty() || mode == "next") m = drift::CaptureMode::kNextRequests;
  else if (mode == "live") m = drift::CaptureMode::kPromoteLive;
  else return absl::InvalidArgumentError(absl::StrCat("'mode' must be \"next\" or \"live\", got \"", mode, "\""));
  if (absl::Status st = monitor_->CaptureBaseline(model.empty() ? ctx_->model_name() : model, adapter, m); !st.ok()) return st;
  return monitor_->ToJson();
}

absl::StatusOr<std::string> DriftExporter::Reset(const std::string& model, const std::string& adapter) {
  if (absl::Status st = monitor_->Reset(model.empty() ? ctx_->model_name() : model, adapter); !st.ok()) return st;
  return monitor_->ToJson();
}

absl::Status DriftExporter::RegisterRoutes(http::HttpServer& server) {
  auto guarded = [this](auto action) {
    return [this, action](const http::HttpRequest& r, std::shared_ptr<http::ResponseWriter> w) {
      if (absl::Status st = auth_->Check(std::string(r.headers.Get("Authorization")), r.remote); !st.ok()) {
        http::WriteJsonError(w, 401, std::string(st.message()), "authentication_error");
        return;
      }
      json body = r.body.empty() ? json::object() : json::parse(r.body, nullptr, false);
      if (body.is_discarded() || !body.is_object()) {
        http::WriteJsonError(w, 400, "the request body is not a JSON object", "invalid_request_error");
        return;
      }
      auto str = [&](const char* k) { return body.contains(k) && body[k].is_string() ? body[k].get<std::string>() : ""; };
      absl::StatusOr<std::string> out = action(str("model"), str("adapter"), str("mode"));
      if (!out.ok()) {
        const int code = HttpStatusFor(out.status());
        http::WriteJsonError(w, code, std::string(out.status().message()), OpenAiErrorType(code));
        return;
      }
      w->Send(200, "application/json", *out);
    };
  };
  absl::Status st = server.Handle("POST", "/v1/drift/baseline", guarded([this](const std::string& m, const std::string& a, const std::string& mode) {
    return Capture(m, a, mode);
  }));
  if (!st.ok()) return st;
  st = server.Handle("POST", "/v1/drift/reset", guarded([this](const std::string& m, const std::string& a, const std::string&) {
    return Reset(m, a);
  }));
  if (!st.ok()) return st;
  return server.Handle("GET", "/v1/drift", guarded([this](const std::string&, const std::string&, const std::string&) {
    return absl::StatusOr<std::string>(StatsJson());
  }));
}

}  // namespace tessera
