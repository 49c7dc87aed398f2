// Baselines on disk: one JSON file per (model, adapter) in the drift directory, replaced
// atomically (temporary file, fsync, rename) so a crash never leaves a torn baseline.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/drift/baseline.h"

namespace tessera::drift {

std::string BaselineToJson(const BaselineData& data);
absl::StatusOr<BaselineData> BaselineFromJson(std::string_view text);

class BaselineStore {
 public:
  // An empty directory disables persistence: Save and Remove succeed and do nothing.
  explicit BaselineStore(std::string dir) : dir_(std::move(dir)) {}

  bool enabled() const { return !dir_.empty(); }
  absl::Status Init() const;  // creates the directory
  absl::Status Save(const BaselineData& data) const;
  absl::Status Remove(std::string_view model, std::string_view adapter) const;  // absent is ok
  // Every baseline file in the directory; a malformed one is an error naming the file.
  absl::StatusOr<std::vector<BaselineData>> LoadAll() const;

  // <model>.<adapter>.baseline.json with everything but [A-Za-z0-9_-] percent-encoded, so
  // any name maps to one flat, unambiguous file name.
  std::string PathFor(std::string_view model, std::string_view adapter) const;

 private:
  std::string dir_;
};

}  // namespace tessera::drift
