// The one place where absl::Status codes become HTTP statuses and OpenAI error types
// (gRPC uses the absl code as it is: the numbering is shared).
#pragma once

#include <string>

#include "absl/status/status.h"

namespace tessera {

int HttpStatusFor(const absl::Status& status);
// OpenAI's error "type" for an HTTP status (invalid_request_error, ...).
std::string OpenAiErrorType(int http_status);

}  // namespace tessera
