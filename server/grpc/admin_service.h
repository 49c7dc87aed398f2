// tessera.v1.Admin over gRPC: LoRA adapters and drift baselines, behind the admin token
// (metadata "authorization: Bearer <token>"; without a token, loopback peers only).
#pragma once

#include "server/admin/admin_auth.h"
#include "server/admin/lora_admin.h"
#include "server/drift/drift_exporter.h"
#include "tessera/v1/admin.grpc.pb.h"

namespace tessera {

class AdminService final : public tessera::v1::Admin::CallbackService {
 public:
  // lora or drift may be null when that feature is off.
  AdminService(const AdminAuth* auth, LoraAdmin* lora, DriftExporter* drift) : auth_(auth), lora_(lora), drift_(drift) {}

  grpc::ServerUnaryReactor* LoadLoraAdapter(grpc::CallbackServerContext* ctx, const tessera::v1::LoadLoraAdapterRequest* req,
                                            tessera::v1::LoadLoraAdapterResponse* resp) override;
  grpc::ServerUnaryReactor* UnloadLoraAdapter(grpc::CallbackServerContext* ctx,
                                              const tessera::v1::UnloadLoraAdapterRequest* req,
                                              tessera::v1::UnloadLoraAdapterResponse* resp) override;
  grpc::ServerUnaryReactor* CaptureDriftBaseline(grpc::CallbackServerContext* ctx, const tessera::v1::DriftTarget* req,
                                                 tessera::v1::DriftStatsResponse* resp) override;
  grpc::ServerUnaryReactor* ResetDrift(grpc::CallbackServerContext* ctx, const tessera::v1::DriftTarget* req,
                                       tessera::v1::DriftStatsResponse* resp) override;
  grpc::ServerUnaryReactor* GetDriftStats(grpc::CallbackServerContext* ctx, const tessera::v1::DriftTarget* req,
                                          tessera::v1::DriftStatsResponse* resp) override;

 private:
  absl::Status Authorize(grpc::CallbackServerContext* ctx) const;
  const AdminAuth* auth_;
  LoraAdmin* lora_;
  DriftExporter* drift_;
};

}  // namespace tessera
