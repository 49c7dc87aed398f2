#include "runtime/model/weights.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "runtime/common/status_macros.h"

namespace tessera {

std::string ShapeString(const std::vector<int64_t>& shape) { return "[" + absl::StrJoin(shape, ", ") + "]"; }

absl::StatusOr<std::unique_ptr<WeightStore>> WeightStore::Open(const std::string& dir) {
  namespace fs = std::filesystem;
  auto store = std::unique_ptr<WeightStore>(new WeightStore());
  store->dir_ = dir;
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  std::vector<std::string> shard_names;
  if (fs::exists(index_path)) {
    std::ifstream in(index_path);
    std::stringstream ss;
    ss << in.rdbuf();
    nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": not a safetensors index (needs a 'weight_map' object)"));
    std::set<std::string> unique;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": weight_map values must be file names"));
      std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard.find("..") != std::string::npos)
        return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": shard name '", shard, "' must be a plain file name"));
      unique.insert(shard);
    }
    shard_names.assign(unique.begin(), unique.end());
    for (const auto& shard : shard_names) {
      ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open((fs::path(dir) / shard).string()));
      store->files_.push_back(std::move(file));
    }
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      const std::string shard = it.value().get<std::string>();
      for (const auto& f : store->files_) {
        if (fs::path(f->path()).filename() == shard) {
          const TensorInfo* t = f->Find(it.key());
          if (t == nullptr)
            return absl::InvalidArgumentError(absl::StrCat(f->path(), ": index lists tensor '", it.key(), "' but the shard lacks it"));
          store->index_[it.key()] = t;
        }
      }
    }
  } else {
    const fs::path single = fs::path(dir) / "model.safetensors";
    if (!fs::exists(single))
      return absl::NotFoundError(absl::StrCat(dir, ": no model.safetensors or model.safetensors.index.json"));
    ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single.string()));
    for (const auto& [name, info] : file->tensors()) store->index_[name] = &info;
    store->files_.push_back(std::move(file));
  }
  return store;
}

absl::StatusOr<const TensorInfo*> WeightStore::Get(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) return absl::NotFoundError(absl::StrCat(dir_, ": missing tensor '", name, "'"));
  return it->second;
}

absl::StatusOr<const TensorInfo*> WeightStore::Get(const std::string& name, const std::vector<int64_t>& shape) const {
  ASSIGN_OR_RETURN(const TensorInfo* t, Get(name));
  if (t->shape != shape)
    return absl::InvalidArgumentError(absl::StrCat(dir_, ": tensor '", name, "' has shape ", ShapeString(t->shape),
                                                   ", expected ", ShapeString(shape)));
  return t;
}

std::vector<std::string> WeightStore::Names() const {
  std::vector<std::string> names;
  for (const auto& [n, _] : index_) names.push_back(n);
  return names;
}

}  // namespace tessera
