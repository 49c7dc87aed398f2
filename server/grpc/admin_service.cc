#include "server/grpc/admin_service.h"

#include "server/grpc/inference_service.h"

namespace tessera {

namespace v1 = tessera::v1;

absl::Status AdminService::Authorize(grpc::CallbackServerContext* ctx) const {
  std::string authorization;
  auto it = ctx->client_metadata().find("authorization");
  if (it != ctx->client_metadata().end()) authorization.assign(it->second.data(), it->second.size());
  return auth_->Check(authorization, ctx->peer());
}

namespace {

// Runs `action` after the auth check and finishes the call with its status.
template <typename F>
grpc::ServerUnaryReactor* Run(grpc::CallbackServerContext* ctx, const absl::Status& auth, bool available, F action) {
  auto* reactor = ctx->DefaultReactor();
  if (!auth.ok()) {
    reactor->Finish(ToGrpcStatus(auth));
  } else if (!available) {
    reactor->Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this feature is not enabled on the server"));
  } else {
    reactor->Finish(ToGrpcStatus(action()));
  }
  return reactor;
}

// The same for adapter loads and unloads, which run on the LoRA admin's thread: the call
// finishes from there, with the message in `resp`.
template <typename Resp, typename F>
grpc::ServerUnaryReactor* RunOnAdminThread(grpc::CallbackServerContext* ctx, const absl::Status& auth, bool available,
                                           Resp* resp, F start) {
  auto* reactor = ctx->DefaultReactor();
  if (!auth.ok()) {
    reactor->Finish(ToGrpcStatus(auth));
  } else if (!available) {
    reactor->Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this feature is not enabled on the server"));
  } else {
    start([reactor, resp](absl::StatusOr<std::string> out) {
      if (out.ok()) resp->set_message(*out);
      reactor->Finish(ToGrpcStatus(out.status()));
    });
  }
  return reactor;
}

}  // namespace

grpc::ServerUnaryReactor* AdminService::LoadLoraAdapter(grpc::CallbackServerContext* ctx, const v1::LoadLoraAdapterRequest* req,
                                                        v1::LoadLoraAdapterResponse* resp) {
  return RunOnAdminThread(ctx, Authorize(ctx), lora_ != nullptr, resp, [&](LoraAdmin::Done done) {
    lora_->LoadAsync(req->lora_name(), req->lora_path(), std::move(done));
  });
}

grpc::ServerUnaryReactor* AdminService::UnloadLoraAdapter(grpc::CallbackServerContext* ctx,
                                                          const v1::UnloadLoraAdapterRequest* req,
                                                          v1::UnloadLoraAdapterResponse* resp) {
  return RunOnAdminThread(ctx, Authorize(ctx), lora_ != nullptr, resp,
                          [&](LoraAdmin::Done done) { lora_->UnloadAsync(req->lora_name(), std::move(done)); });
}

grpc::ServerUnaryReactor* AdminService::CaptureDriftBaseline(grpc::CallbackServerContext* ctx, const v1::DriftTarget* req,
                                                             v1::DriftStatsResponse* resp) {
  return Run(ctx, Authorize(ctx), drift_ != nullptr, [&]() -> absl::Status {
    auto out = drift_->Capture(req->model(), req->adapter(), "next");
    if (!out.ok()) return out.status();
    resp->set_json(*out);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::ResetDrift(grpc::CallbackServerContext* ctx, const v1::DriftTarget* req,
                                                   v1::DriftStatsResponse* resp) {
  return Run(ctx, Authorize(ctx), drift_ != nullptr, [&]() -> absl::Status {
    auto out = drift_->Reset(req->model(), req->adapter());
    if (!out.ok()) return out.status();
    resp->set_json(*out);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::GetDriftStats(grpc::CallbackServerContext* ctx, const v1::DriftTarget*,
                                                      v1::DriftStatsResponse* resp) {
  return Run(ctx, Authorize(ctx), drift_ != nullptr, [&]() -> absl::Status {
    resp->set_json(drift_->StatsJson());
    return absl::OkStatus();
  });
}

}  // namespace tessera
