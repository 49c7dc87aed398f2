// Bridges std::string_view (used in tessera's interfaces) to absl::string_view, which is a
// distinct type in the Debian build of Abseil.
#pragma once

#include <string_view>

#include "absl/strings/string_view.h"

namespace tessera::http {

inline absl::string_view AbslView(std::string_view text) { return {text.data(), text.size()}; }

}  // namespace tessera::http
