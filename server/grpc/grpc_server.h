// The gRPC transport: tessera.v1.Inference (streaming Generate, Tokenize, ListModels) on
// gRPC's callback API (no thread per stream), the standard health service, and reflection.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/core/serving_context.h"

namespace grpc {
class Server;
class Service;
}  // namespace grpc

namespace tessera {

class GrpcServer {
 public:
  // Binds host:port (port 0 picks a free one). `extra` services (e.g. Admin) are added too.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(ServingContext* ctx, const std::string& host, int port,
                                                           std::vector<grpc::Service*> extra = {});
  ~GrpcServer();
  int port() const { return port_; }
  // Health reports NOT_SERVING (while draining) or SERVING.
  void SetServing(bool serving);
  // Waits for in-flight calls up to the deadline, then cancels the rest.
  void Shutdown(double timeout_s);

 private:
  GrpcServer() = default;
  std::unique_ptr<grpc::Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace tessera
