// The OpenAI-compatible HTTP API over the ServingContext: /v1/completions,
// /v1/chat/completions (SSE streaming or whole responses), /v1/models, and the
// operational routes /health, /ready and /metrics.
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "server/core/serving_context.h"
#include "server/http/http_server.h"

namespace tessera {

class OpenAiApi {
 public:
  explicit OpenAiApi(ServingContext* ctx) : ctx_(ctx) {}

  absl::Status Register(http::HttpServer& server);

 private:
  void Generate(const http::HttpRequest& request, std::shared_ptr<http::ResponseWriter> writer, bool chat);
  void Models(std::shared_ptr<http::ResponseWriter> writer);

  ServingContext* ctx_;
};

}  // namespace tessera
