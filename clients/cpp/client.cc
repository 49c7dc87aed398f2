#include "clients/cpp/client.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"

namespace tessera::client {
namespace {

// gRPC and absl share the canonical code numbering, so the code carries over as is.
// An unreachable server is named so a one-line error says what went wrong.
absl::Status FromGrpc(const grpc::Status& st, const std::string& target) {
  if (st.ok()) return absl::OkStatus();
  const auto code = static_cast<absl::StatusCode>(st.error_code());
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE)
    return absl::Status(code, absl::StrCat("cannot reach the tessera server at ", target, ": ", st.error_message()));
  return absl::Status(code, st.error_message());
}

}  // namespace

absl::Status ClientOptions::Validate() const {
  if (!(timeout_s >= 0)) return absl::InvalidArgumentError("timeout must be >= 0 seconds");
  return absl::OkStatus();
}

std::string FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_ABORT:
      return "abort";
    default:
      return "";
  }
}

TesseraClient::TesseraClient(std::string target, ClientOptions options, std::shared_ptr<grpc::Channel> channel)
    : target_(std::move(target)),
      options_(options),
      channel_(std::move(channel)),
      inference_(v1::Inference::NewStub(channel_)),
      admin_(v1::Admin::NewStub(channel_)) {}

absl::StatusOr<std::unique_ptr<TesseraClient>> TesseraClient::Connect(const std::string& target,
                                                                      const ClientOptions& options) {
  if (absl::Status st = options.Validate(); !st.ok()) return st;
  if (target.empty()) return absl::InvalidArgumentError("the server target is empty (expected HOST:PORT)");
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  if (!channel) return absl::InvalidArgumentError(absl::StrCat("cannot make a channel to '", target, "'"));
  return std::unique_ptr<TesseraClient>(new TesseraClient(target, options, std::move(channel)));
}

void TesseraClient::Prepare(grpc::ClientContext* ctx, std::string_view bearer_token) const {
  ctx->set_wait_for_ready(!options_.fail_fast);
  if (options_.timeout_s > 0) {
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::duration_cast<std::chrono::system_clock::duration>(
                          std::chrono::duration<double>(options_.timeout_s)));
  }
  if (!bearer_token.empty()) ctx->AddMetadata("authorization", "Bearer " + std::string(bearer_token));
}

absl::StatusOr<GenerateResult> TesseraClient::Generate(const v1::GenerateRequest& request, const ChunkCallback& on_chunk) {
  grpc::ClientContext ctx;
  Prepare(&ctx, {});
  auto reader = inference_->Generate(&ctx, request);
  GenerateResult result;
  v1::GenerateResponse msg;
  bool cancelled = false;
  while (reader->Read(&msg)) {
    result.text += msg.text();
    result.token_ids.insert(result.token_ids.end(), msg.token_ids().begin(), msg.token_ids().end());
    if (!msg.request_id().empty()) result.request_id = msg.request_id();
    if (msg.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      result.finish_reason = msg.finish_reason();
      result.usage = msg.usage();
    }
    if (on_chunk && !on_chunk(msg)) {
      // Cancelling makes the server abort the request; the stream then ends.
      cancelled = true;
      ctx.TryCancel();
      while (reader->Read(&msg)) {
      }
      break;
    }
  }
  grpc::Status st = reader->Finish();
  if (cancelled) return absl::CancelledError("generation cancelled by the caller");
  if (!st.ok()) return FromGrpc(st, target_);
  return result;
}

absl::StatusOr<v1::TokenizeResponse> TesseraClient::Tokenize(const std::string& text, bool add_special_tokens,
                                                             const std::string& model) {
  grpc::ClientContext ctx;
  Prepare(&ctx, {});
  v1::TokenizeRequest req;
  req.set_model(model);
  req.set_text(text);
  req.set_add_special_tokens(add_special_tokens);
  v1::TokenizeResponse resp;
  if (grpc::Status st = inference_->Tokenize(&ctx, req, &resp); !st.ok()) return FromGrpc(st, target_);
  return resp;
}

absl::StatusOr<std::vector<v1::ModelInfo>> TesseraClient::ListModels() {
  grpc::ClientContext ctx;
  Prepare(&ctx, {});
  v1::ListModelsResponse resp;
  if (grpc::Status st = inference_->ListModels(&ctx, v1::ListModelsRequest(), &resp); !st.ok())
    return FromGrpc(st, target_);
  return std::vector<v1::ModelInfo>(resp.models().begin(), resp.models().end());
}

absl::StatusOr<std::string> TesseraClient::LoadLoraAdapter(const std::string& name, const std::string& path,
                                                           std::string_view bearer_token) {
  grpc::ClientContext ctx;
  Prepare(&ctx, bearer_token);
  v1::LoadLoraAdapterRequest req;
  req.set_lora_name(name);
  req.set_lora_path(path);
  v1::LoadLoraAdapterResponse resp;
  if (grpc::Status st = admin_->LoadLoraAdapter(&ctx, req, &resp); !st.ok()) return FromGrpc(st, target_);
  return resp.message();
}

absl::StatusOr<std::string> TesseraClient::UnloadLoraAdapter(const std::string& name, std::string_view bearer_token) {
  grpc::ClientContext ctx;
  Prepare(&ctx, bearer_token);
  v1::UnloadLoraAdapterRequest req;
  req.set_lora_name(name);
  v1::UnloadLoraAdapterResponse resp;
  if (grpc::Status st = admin_->UnloadLoraAdapter(&ctx, req, &resp); !st.ok()) return FromGrpc(st, target_);
  return resp.message();
}

absl::StatusOr<std::string> TesseraClient::DriftCall(
    grpc::Status (v1::Admin::Stub::*method)(grpc::ClientContext*, const v1::DriftTarget&, v1::DriftStatsResponse*),
    std::string_view bearer_token, const std::string& model, const std::string& adapter) {
  grpc::ClientContext ctx;
  Prepare(&ctx, bearer_token);
  v1::DriftTarget req;
  req.set_model(model);
  req.set_adapter(adapter);
  v1::DriftStatsResponse resp;
  if (grpc::Status st = (admin_.get()->*method)(&ctx, req, &resp); !st.ok()) return FromGrpc(st, target_);
  return resp.json();
}

absl::StatusOr<std::string> TesseraClient::GetDriftStats(std::string_view bearer_token, const std::string& model,
                                                         const std::string& adapter) {
  return DriftCall(&v1::Admin::Stub::GetDriftStats, bearer_token, model, adapter);
}

absl::StatusOr<std::string> TesseraClient::CaptureDriftBaseline(std::string_view bearer_token, const std::string& model,
                                                                const std::string& adapter) {
  return DriftCall(&v1::Admin::Stub::CaptureDriftBaseline, bearer_token, model, adapter);
}

absl::StatusOr<std::string> TesseraClient::ResetDrift(std::string_view bearer_token, const std::string& model,
                                                      const std::string& adapter) {
  return DriftCall(&v1::Admin::Stub::ResetDrift, bearer_token, model, adapter);
}

}  // namespace tessera::client
