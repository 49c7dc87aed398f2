#include "server/grpc/grpc_server.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "server/grpc/inference_service.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(ServingContext* ctx, const std::string& host, int port,
                                                              std::vector<grpc::Service*> extra) {
  static const bool once = [] {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    return true;
  }();
  (void)once;
  auto s = std::unique_ptr<GrpcServer>(new GrpcServer());
  s->service_ = std::make_unique<InferenceService>(ctx);
  grpc::ServerBuilder builder;
  int selected = 0;
  const std::string address = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &selected);
  builder.RegisterService(s->service_.get());
  for (grpc::Service* svc : extra) builder.RegisterService(svc);
  builder.SetMaxReceiveMessageSize(64 << 20);
  s->server_ = builder.BuildAndStart();
  if (!s->server_ || selected == 0)
    return absl::UnavailableError(absl::StrCat("gRPC: cannot listen on ", address, " (in use or not allowed)"));
  s->port_ = selected;
  s->SetServing(true);
  return s;
}

GrpcServer::~GrpcServer() {
  if (server_) Shutdown(0);
}

void GrpcServer::SetServing(bool serving) {
  if (auto* health = server_->GetHealthCheckService()) health->SetServingStatus(serving);
}

void GrpcServer::Shutdown(double timeout_s) {
  if (!server_) return;
  server_->Shutdown(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  server_->Wait();
  server_.reset();
}

}  // namespace tessera
