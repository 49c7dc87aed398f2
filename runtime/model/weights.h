// The tensors of a Hugging Face model directory: one model.safetensors or shards listed
// in model.safetensors.index.json, memory-mapped, looked up by name with shape checks.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model/safetensors.h"

namespace tessera {

class WeightStore {
 public:
  // Opens DIR/model.safetensors.index.json if present, else DIR/model.safetensors.
  static absl::StatusOr<std::unique_ptr<WeightStore>> Open(const std::string& dir);

  bool Contains(const std::string& name) const { return index_.count(name) > 0; }
  // The tensor, checked to have exactly `shape`; errors name the file and tensor.
  absl::StatusOr<const TensorInfo*> Get(const std::string& name, const std::vector<int64_t>& shape) const;
  absl::StatusOr<const TensorInfo*> Get(const std::string& name) const;
  std::vector<std::string> Names() const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*> index_;
};

std::string ShapeString(const std::vector<int64_t>& shape);

}  // namespace tessera
