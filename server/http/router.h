// Router: maps method + path to a handler, telling "no such path" (404) apart from
// "path exists, other methods" (405).
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "server/http/http_server.h"

namespace tessera::http {

class Router {
 public:
  // `path` is exact, or ends in "/*" to match every path below that prefix.
  absl::Status Add(std::string_view method, std::string_view path, HttpHandler handler);

  struct Match {
    const HttpHandler* handler = nullptr;  // null: see path_found
    bool path_found = false;               // true with null handler means 405
    std::vector<std::string> allowed;      // methods of the matched path, for Allow
  };
  Match Find(std::string_view method, std::string_view path) const;

 private:
  using Methods = std::map<std::string, HttpHandler, std::less<>>;
  std::map<std::string, Methods, std::less<>> exact_;
  std::map<std::string, Methods, std::less<>> prefix_;  // key keeps the trailing '/'
};

}  // namespace tessera::http
