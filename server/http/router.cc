// Exact and prefix route lookup.
#include "server/http/router.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/http/string_util.h"

namespace tessera::http {
namespace {

bool IsToken(std::string_view method) {
  if (method.empty()) return false;
  for (char c : method) {
    if (!absl::ascii_isupper(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

Router::Match MatchMethods(const std::map<std::string, HttpHandler, std::less<>>& methods,
                           std::string_view method) {
  Router::Match match;
  match.path_found = true;
  for (const auto& [name, handler] : methods) {
    match.allowed.push_back(name);
    if (name == method) match.handler = &handler;
  }
  // HEAD is GET without the body (RFC 9110 9.3.2); the connection drops the body.
  if (match.handler == nullptr && method == "HEAD") {
    if (auto it = methods.find("GET"); it != methods.end()) match.handler = &it->second;
  }
  return match;
}

}  // namespace

absl::Status Router::Add(std::string_view method, std::string_view path, HttpHandler handler) {
  if (!IsToken(method)) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP method must be upper case: '", AbslView(method), "'"));
  }
  if (!absl::StartsWith(AbslView(path), "/")) {
    return absl::InvalidArgumentError(
        absl::StrCat("route path must start with '/': '", AbslView(path), "'"));
  }
  if (!handler) return absl::InvalidArgumentError("route handler is empty");
  auto* table = &exact_;
  std::string key(path);
  if (absl::EndsWith(AbslView(path), "/*")) {
    table = &prefix_;
    key.pop_back();
  }
  auto [it, inserted] = (*table)[key].emplace(std::string(method), std::move(handler));
  if (!inserted) {
    return absl::AlreadyExistsError(
        absl::StrCat("route already registered: ", AbslView(method), " ", AbslView(path)));
  }
  return absl::OkStatus();
}

Router::Match Router::Find(std::string_view method, std::string_view path) const {
  if (auto it = exact_.find(path); it != exact_.end()) return MatchMethods(it->second, method);
  // Longest prefix first: try every '/' of the path from the last one back to the root.
  for (size_t i = path.rfind('/'); i != std::string_view::npos;
       i = i == 0 ? std::string_view::npos : path.rfind('/', i - 1)) {
    if (auto it = prefix_.find(path.substr(0, i + 1)); it != prefix_.end()) {
      return MatchMethods(it->second, method);
    }
  }
  return Match{};
}

}  // namespace tessera::http
