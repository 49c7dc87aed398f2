// Connects the drift monitor to serving: turns finished requests into features, exports
// the statistics as Prometheus gauges, and serves the admin routes (capture a baseline,
// reset, show statistics) over HTTP.
#pragma once

#include <memory>
#include <string>

#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "runtime/drift/drift_monitor.h"
#include "server/admin/admin_auth.h"
#include "server/core/serving_context.h"
#include "server/http/http_server.h"

namespace tessera {

class DriftExporter {
 public:
  DriftExporter(drift::DriftMonitor* monitor, ServingContext* ctx, const AdminAuth* auth, int32_t vocab_size);

  // Installs the finished-request observer on the serving context.
  void Attach();
  // Copies the monitor's statistics into the gauges (call before serializing /metrics).
  void Refresh();
  absl::Status RegisterRoutes(http::HttpServer& server);

  // Admin actions shared by HTTP and gRPC. mode: "next" (default) or "live".
  absl::StatusOr<std::string> Capture(const std::string& model, const std::string& adapter, const std::string& mode);
  absl::StatusOr<std::string> Reset(const std::string& model, const std::string& adapter);
  std::string StatsJson() { return monitor_->ToJson(); }

 private:
  drift::DriftMonitor* monitor_;
  ServingContext* ctx_;
  const AdminAuth* auth_;
  int32_t vocab_size_;
  prometheus::Family<prometheus::Gauge>& ks_;
  prometheus::Family<prometheus::Gauge>& ks_pvalue_;
  prometheus::Family<prometheus::Gauge>& psi_;
  prometheus::Family<prometheus::Gauge>& kl_;
  prometheus::Family<prometheus::Gauge>& samples_;
  prometheus::Family<prometheus::Gauge>& dropped_;
};

}  // namespace tessera
