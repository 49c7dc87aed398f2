// Runtime LoRA adapter management for the admin API (vLLM's /v1/load_lora_adapter and
// /v1/unload_lora_adapter): paths must resolve inside --adapter-root. Loads and unloads run
// one at a time on the admin's own thread, never on the thread that took the request (an
// HTTP io thread also serves other connections' streams).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/common/serial_executor.h"
#include "runtime/lora/lora_registry.h"
#include "server/admin/admin_auth.h"
#include "server/http/http_server.h"

namespace tessera {

class LoraAdmin {
 public:
  using Done = std::function<void(absl::StatusOr<std::string>)>;

  // adapter_root empty: adapters cannot be loaded at run time (only --lora-modules).
  // `worker` runs the asynchronous loads and unloads; null: the admin starts its own. A
  // worker passed in must have run the admin's tasks before the admin is destroyed.
  LoraAdmin(LoraRegistry* registry, std::string adapter_root, const AdminAuth* auth,
            SerialExecutor* worker = nullptr);

  // Resolves lora_path under the adapter root and loads it; nothing changes on error.
  absl::StatusOr<std::string> Load(const std::string& name, const std::string& lora_path);
  absl::StatusOr<std::string> Unload(const std::string& name);
  // The same on the worker thread; `done` gets the result there.
  void LoadAsync(std::string name, std::string lora_path, Done done);
  void UnloadAsync(std::string name, Done done);
  absl::Status RegisterRoutes(http::HttpServer& server);

 private:
  LoraRegistry* registry_;
  std::string adapter_root_;
  const AdminAuth* auth_;
  std::unique_ptr<SerialExecutor> own_worker_;
  SerialExecutor* worker_;
};

}  // namespace tessera
