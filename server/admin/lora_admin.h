// Runtime LoRA adapter management for the admin API (vLLM's /v1/load_lora_adapter and
// /v1/unload_lora_adapter): paths must resolve inside --adapter-root.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "runtime/lora/lora_registry.h"
#include "server/admin/admin_auth.h"
#include "server/http/http_server.h"

namespace tessera {

class LoraAdmin {
 public:
  // adapter_root empty: adapters cannot be loaded at run time (only --lora-modules).
  LoraAdmin(LoraRegistry* registry, std::string adapter_root, const AdminAuth* auth)
      : registry_(registry), adapter_root_(std::move(adapter_root)), auth_(auth) {}

  // Resolves lora_path under the adapter root and loads it; nothing changes on error.
  absl::StatusOr<std::string> Load(const std::string& name, const std::string& lora_path);
  absl::StatusOr<std::string> Unload(const std::string& name);
  absl::Status RegisterRoutes(http::HttpServer& server);

 private:
  LoraRegistry* registry_;
  std::string adapter_root_;
  const AdminAuth* auth_;
};

}  // namespace tessera
