#include "runtime/lora/adapter_path.h"

#include <filesystem>

#include "absl/strings/str_cat.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

bool Inside(const fs::path& root, const fs::path& p) {
  auto r = root.begin(), q = p.begin();
  for (; r != root.end(); ++r, ++q) {
    if (q == p.end() || *r != *q) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::string> ResolveAdapterPath(const std::string& root, const std::string& lora_path) {
  if (root.empty()) return absl::FailedPreconditionError("loading adapters by path needs --adapter-root");
  if (lora_path.empty()) return absl::InvalidArgumentError("the adapter path is empty");
  if (lora_path.find('\0') != std::string::npos) return absl::InvalidArgumentError("the adapter path contains a NUL byte");
  std::error_code ec;
  const fs::path real_root = fs::canonical(root, ec);
  if (ec || !fs::is_directory(real_root, ec))
    return absl::FailedPreconditionError(absl::StrCat("--adapter-root ", root, " is not a directory"));
  const fs::path requested = fs::path(lora_path).is_absolute() ? fs::path(lora_path) : fs::path(root) / lora_path;
  const fs::path real = fs::canonical(requested, ec);
  // Existence is checked after containment of the lexical path, so a missing path
  // outside the root is reported as an escape, not probed.
  if (ec) {
    const fs::path lexical = fs::weakly_canonical(requested, ec);
    if (!ec && !Inside(real_root, lexical))
      return absl::PermissionDeniedError(absl::StrCat("adapter path '", lora_path, "' is outside --adapter-root"));
    return absl::NotFoundError(absl::StrCat("adapter path '", lora_path, "' does not exist under --adapter-root"));
  }
  if (!Inside(real_root, real))
    return absl::PermissionDeniedError(absl::StrCat("adapter path '", lora_path, "' resolves outside --adapter-root"));
  if (!fs::is_directory(real, ec))
    return absl::InvalidArgumentError(absl::StrCat("adapter path '", lora_path, "' is not a directory"));
  for (const char* file : {"adapter_config.json", "adapter_model.safetensors"}) {
    const fs::path f = real / file;
    if (!fs::exists(fs::symlink_status(f, ec))) continue;
    const fs::path real_file = fs::canonical(f, ec);
    if (ec || !Inside(real_root, real_file))
      return absl::PermissionDeniedError(absl::StrCat("adapter file '", (fs::path(lora_path) / file).string(),
                                                      "' resolves outside --adapter-root"));
  }
  return real.string();
}

}  // namespace tessera
