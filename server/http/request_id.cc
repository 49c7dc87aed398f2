// Request id sanitizing and generation.
#include "server/http/request_id.h"

#include <random>

#include "absl/strings/ascii.h"

namespace tessera::http {

std::string SanitizeRequestId(std::string_view incoming) {
  std::string out;
  for (char c : incoming) {
    if (out.size() == kMaxRequestIdLength) break;
    if (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ||
        c == ':') {
      out.push_back(c);
    }
  }
  return out;
}

std::string GenerateRequestId() {
  // Per-thread engine: no lock on the hot path, seeded once from the OS.
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(32, '0');
  for (size_t i = 0; i < out.size(); i += 16) {
    uint64_t bits = rng();
    for (size_t j = 0; j < 16; ++j, bits >>= 4) out[i + j] = kHex[bits & 0xf];
  }
  return out;
}

std::string ResolveRequestId(std::string_view incoming) {
  std::string id = SanitizeRequestId(incoming);
  return id.empty() ? GenerateRequestId() : id;
}

}  // namespace tessera::http
