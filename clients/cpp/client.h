// TesseraClient: a C++ client of a tessera server's gRPC services (Inference and Admin).
// Requests and replies are the wire messages of proto/tessera/v1; errors are absl::Status.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tessera/v1/admin.grpc.pb.h"
#include "tessera/v1/inference.grpc.pb.h"

namespace grpc {
class Channel;
}

namespace tessera::client {

struct ClientOptions {
  // Deadline of every call in seconds; 0 means none (a long generation may take minutes).
  double timeout_s = 0;
  // Fail at once when the server is not reachable instead of waiting for it to come up.
  bool fail_fast = true;

  absl::Status Validate() const;
};

// What a finished generation reports besides the streamed chunks.
struct GenerateResult {
  std::string text;                // all text deltas joined
  std::vector<int32_t> token_ids;  // all generated ids
  v1::FinishReason finish_reason = v1::FINISH_REASON_UNSPECIFIED;
  v1::Usage usage;
  std::string request_id;
};

// Called once per streamed message, in order; returning false cancels the generation
// (Generate then returns CANCELLED).
using ChunkCallback = std::function<bool(const v1::GenerateResponse&)>;

class TesseraClient {
 public:
  // `target` is host:port (or any gRPC target URI). The connection is made lazily, so an
  // unreachable server shows up as UNAVAILABLE from the first call.
  static absl::StatusOr<std::unique_ptr<TesseraClient>> Connect(const std::string& target,
                                                                const ClientOptions& options = {});

  // Streams a generation. `on_chunk` may be empty when only the result matters.
  absl::StatusOr<GenerateResult> Generate(const v1::GenerateRequest& request, const ChunkCallback& on_chunk = {});
  // Token ids (and their pieces) of `text` in the served model's vocabulary.
  absl::StatusOr<v1::TokenizeResponse> Tokenize(const std::string& text, bool add_special_tokens = true,
                                                const std::string& model = "");
  // The base model first, then loaded LoRA adapters.
  absl::StatusOr<std::vector<v1::ModelInfo>> ListModels();

  // Admin calls. `bearer_token` is sent as "authorization: Bearer T" when not empty
  // (a server without --admin-token accepts loopback clients without one).
  absl::StatusOr<std::string> LoadLoraAdapter(const std::string& name, const std::string& path,
                                              std::string_view bearer_token = {});
  absl::StatusOr<std::string> UnloadLoraAdapter(const std::string& name, std::string_view bearer_token = {});
  // Drift calls return the statistics JSON the HTTP admin API returns. Empty `model`
  // means every model; empty `adapter` the base model.
  absl::StatusOr<std::string> GetDriftStats(std::string_view bearer_token = {}, const std::string& model = "",
                                            const std::string& adapter = "");
  absl::StatusOr<std::string> CaptureDriftBaseline(std::string_view bearer_token = {}, const std::string& model = "",
                                                   const std::string& adapter = "");
  absl::StatusOr<std::string> ResetDrift(std::string_view bearer_token = {}, const std::string& model = "",
                                         const std::string& adapter = "");

  const std::string& target() const { return target_; }

 private:
  TesseraClient(std::string target, ClientOptions options, std::shared_ptr<grpc::Channel> channel);
  void Prepare(grpc::ClientContext* ctx, std::string_view bearer_token) const;
  absl::StatusOr<std::string> DriftCall(
      grpc::Status (v1::Admin::Stub::*method)(grpc::ClientContext*, const v1::DriftTarget&, v1::DriftStatsResponse*),
      std::string_view bearer_token, const std::string& model, const std::string& adapter);

  std::string target_;
  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> inference_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

// "stop", "length", "abort" or "" (not finished), as the HTTP API names them.
std::string FinishReasonName(v1::FinishReason reason);

}  // namespace tessera::client
