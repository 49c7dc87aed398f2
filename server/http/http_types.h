// Plain request/response value types shared by the HTTP transport and the handlers built
// on it; free of Boost so handler code compiles without the Beast headers.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tessera::http {

// Ordered header list with case-insensitive lookup (HTTP field names are case-insensitive).
class HttpHeaders {
 public:
  void Add(std::string name, std::string value);
  // First value of `name`, or nullptr when absent.
  const std::string* Find(std::string_view name) const;
  std::string_view Get(std::string_view name, std::string_view fallback = {}) const;
  bool Has(std::string_view name) const { return Find(name) != nullptr; }
  const std::vector<std::pair<std::string, std::string>>& entries() const { return entries_; }
  size_t size() const { return entries_.size(); }

 private:
  std::vector<std::pair<std::string, std::string>> entries_;
};

// Extra response headers, written in order.
using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method;  // as sent, e.g. "POST"
  std::string target;  // path only, e.g. "/v1/completions"
  std::string query;   // raw text after '?', without it; empty when absent
  HttpHeaders headers;
  std::string body;
  std::string request_id;  // sanitized X-Request-Id, or a generated one
  std::string remote;      // peer "ip:port"
};

}  // namespace tessera::http
