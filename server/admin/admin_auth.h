// Who may call admin routes: with --admin-token, requests carrying
// "Authorization: Bearer <token>"; without one, only clients on the loopback interface.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace tessera {

class AdminAuth {
 public:
  explicit AdminAuth(std::string token) : token_(std::move(token)) {}
  // `authorization` is the header/metadata value (may be empty); `peer` is "ip:port" or a
  // gRPC peer string ("ipv4:127.0.0.1:5000").
  absl::Status Check(const std::string& authorization, const std::string& peer) const;
  bool has_token() const { return !token_.empty(); }

 private:
  std::string token_;
};

}  // namespace tessera
