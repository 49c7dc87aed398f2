// tessera.v1.Inference implemented over the ServingContext.
#pragma once

#include "server/core/serving_context.h"
#include "tessera/v1/inference.grpc.pb.h"

namespace tessera {

class InferenceService final : public tessera::v1::Inference::CallbackService {
 public:
  explicit InferenceService(ServingContext* ctx) : ctx_(ctx) {}

  grpc::ServerWriteReactor<tessera::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const tessera::v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context, const tessera::v1::TokenizeRequest* request,
                                     tessera::v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const tessera::v1::ListModelsRequest* request,
                                       tessera::v1::ListModelsResponse* response) override;

 private:
  ServingContext* ctx_;
};

// absl::Status -> grpc::Status (the code numbering is shared).
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace tessera
