// Case-insensitive header lookup for HttpHeaders.
#include "server/http/http_types.h"

#include "absl/strings/match.h"
#include "server/http/string_util.h"

namespace tessera::http {

void HttpHeaders::Add(std::string name, std::string value) {
  entries_.emplace_back(std::move(name), std::move(value));
}

const std::string* HttpHeaders::Find(std::string_view name) const {
  for (const auto& [key, value] : entries_) {
    if (absl::EqualsIgnoreCase(key, AbslView(name))) return &value;
  }
  return nullptr;
}

std::string_view HttpHeaders::Get(std::string_view name, std::string_view fallback) const {
  const std::string* value = Find(name);
  return value != nullptr ? std::string_view(*value) : fallback;
}

}  // namespace tessera::http
