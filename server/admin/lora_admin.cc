#include "server/admin/lora_admin.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/lora/adapter_path.h"
#include "server/core/status_mapping.h"

namespace tessera {

using json = nlohmann::json;

LoraAdmin::LoraAdmin(LoraRegistry* registry, std::string adapter_root, const AdminAuth* auth, SerialExecutor* worker)
    : registry_(registry), adapter_root_(std::move(adapter_root)), auth_(auth) {
  if (worker == nullptr) {
    own_worker_ = std::make_unique<SerialExecutor>();
    worker = own_worker_.get();
  }
  worker_ = worker;
}

void LoraAdmin::LoadAsync(std::string name, std::string lora_path, Done done) {
  worker_->Post([this, name = std::move(name), path = std::move(lora_path), done = std::move(done)] {
    done(Load(name, path));
  });
}

void LoraAdmin::UnloadAsync(std::string name, Done done) {
  worker_->Post([this, name = std::move(name), done = std::move(done)] { done(Unload(name)); });
}

absl::StatusOr<std::string> LoraAdmin::Load(const std::string& name, const std::string& lora_path) {
  if (name.empty()) return absl::InvalidArgumentError("'lora_name' is required");
  if (lora_path.empty()) return absl::InvalidArgumentError("'lora_path' is required");
  if (adapter_root_.empty())
    return absl::FailedPreconditionError("loading adapters at run time needs the server's --adapter-root");
  auto dir = ResolveAdapterPath(adapter_root_, lora_path);
  if (!dir.ok()) return absl::InvalidArgumentError(std::string(dir.status().message()));
  auto id = registry_->Load(name, *dir);
  if (!id.ok()) return id.status();
  return absl::StrCat("Success: LoRA adapter '", name, "' added successfully.");
}

absl::StatusOr<std::string> LoraAdmin::Unload(const std::string& name) {
  if (name.empty()) return absl::InvalidArgumentError("'lora_name' is required");
  if (absl::Status st = registry_->Unload(name); !st.ok()) return st;
  return absl::StrCat("Success: LoRA adapter '", name, "' removed successfully.");
}

absl::Status LoraAdmin::RegisterRoutes(http::HttpServer& server) {
  auto route = [this](bool load) {
    return [this, load](const http::HttpRequest& r, std::shared_ptr<http::ResponseWriter> w) {
      if (absl::Status st = auth_->Check(std::string(r.headers.Get("Authorization")), r.remote); !st.ok()) {
        http::WriteJsonError(w, 401, std::string(st.message()), "authentication_error");
        return;
      }
      json body = json::parse(r.body, nullptr, false);
      if (body.is_discarded() || !body.is_object()) {
        http::WriteJsonError(w, 400, "the request body is not a JSON object", "invalid_request_error");
        return;
      }
      auto str = [&](const char* k) { return body.contains(k) && body[k].is_string() ? body[k].get<std::string>() : ""; };
      // Answered from the worker thread: reading and uploading an adapter takes long
      // enough to stall every stream on this io thread.
      Done answer = [w](absl::StatusOr<std::string> out) {
        if (!out.ok()) {
          const int code = HttpStatusFor(out.status());
          http::WriteJsonError(w, code, std::string(out.status().message()), OpenAiErrorType(code));
          return;
        }
        w->Send(200, "text/plain; charset=utf-8", *out);
      };
      if (load) {
        LoadAsync(str("lora_name"), str("lora_path"), std::move(answer));
      } else {
        UnloadAsync(str("lora_name"), std::move(answer));
      }
    };
  };
  if (absl::Status st = server.Handle("POST", "/v1/load_lora_adapter", route(true)); !st.ok()) return st;
  return server.Handle("POST", "/v1/unload_lora_adapter", route(false));
}

}  // namespace tessera
