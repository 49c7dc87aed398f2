#include "server/admin/admin_auth.h"


namespace tessera {
namespace {

bool IsLoopback(const std::string& peer) {
  std::string p = peer;
  for (const char* prefix : {"ipv4:", "ipv6:"}) {
    if (p.rfind(prefix, 0) == 0) p = p.substr(5);
  }
  return p.rfind("127.", 0) == 0 || p.rfind("[::1]", 0) == 0 || p.rfind("::1", 0) == 0 ||
         p.rfind("%5B::1%5D", 0) == 0 || p.rfind("[::ffff:127.", 0) == 0;
}

// Compares without an early exit, so the token does not leak through timing.
bool SameSecret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i % (b.empty() ? 1 : b.size())]);
  return diff == 0 && !b.empty();
}

}  // namespace

absl::Status AdminAuth::Check(const std::string& authorization, const std::string& peer) const {
  if (token_.empty()) {
    if (IsLoopback(peer)) return absl::OkStatus();
    return absl::UnauthenticatedError("admin routes need --admin-token when called from another host");
  }
  const std::string prefix = "Bearer ";
  if (authorization.rfind(prefix, 0) != 0) return absl::UnauthenticatedError("missing bearer token for an admin route");
  const std::string given = authorization.substr(prefix.size());
  if (!SameSecret(given, token_))
    return absl::UnauthenticatedError("invalid admin token");
  return absl::OkStatus();
}

}  // namespace tessera
