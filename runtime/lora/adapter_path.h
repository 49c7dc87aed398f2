// Where an admin-supplied adapter path may point: inside --adapter-root only, after
// resolving "..", symlinks and absolute paths.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace tessera {

// Resolves `lora_path` (relative to `root`, or absolute) to a canonical existing directory
// inside `root` (canonicalised too). The files an adapter is read from
// (adapter_config.json, adapter_model.safetensors) must also resolve inside root, so a
// symlinked file cannot leak another file either. PermissionDenied for escapes,
// NotFound for paths that do not exist.
absl::StatusOr<std::string> ResolveAdapterPath(const std::string& root, const std::string& lora_path);

}  // namespace tessera
