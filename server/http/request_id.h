// Request ids: accept a client's X-Request-Id when it is safe to echo, else make one.
#pragma once

#include <string>
#include <string_view>

namespace tessera::http {

inline constexpr size_t kMaxRequestIdLength = 128;

// Keeps [A-Za-z0-9._:-] characters of `incoming`, at most kMaxRequestIdLength of them, so
// the id can be echoed in a header and logged without injection.
std::string SanitizeRequestId(std::string_view incoming);

// 32 random lowercase hex digits.
std::string GenerateRequestId();

// The sanitized incoming id, or a generated one when nothing usable remains.
std::string ResolveRequestId(std::string_view incoming);

}  // namespace tessera::http
