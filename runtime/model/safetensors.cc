#include "runtime/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace tessera {

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

absl::Status Bad(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

}  // namespace

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr && map_ != MAP_FAILED) munmap(map_, map_size_);
}

const TensorInfo* SafetensorsFile::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return Bad(path, "not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return Bad(path, absl::StrCat("file of ", size, " bytes is too short for a safetensors header"));
  }
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->map_ = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (f->map_ == MAP_FAILED) {
    f->map_ = nullptr;
    return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(errno)));
  }
  f->map_size_ = size;
  const auto* base = static_cast<const uint8_t*>(f->map_);
  uint64_t header_len = 0;
  std::memcpy(&header_len, base, 8);  // little-endian u64
  if (header_len > kMaxHeaderBytes) {
    return Bad(path, absl::StrCat("header length ", header_len, " exceeds the 100 MB limit"));
  }
  if (header_len > size - 8) {
    return Bad(path, absl::StrCat("header length ", header_len, " runs past the end of the file (",
                                  size, " bytes)"));
  }
  const char* hdr = reinterpret_cast<const char*>(base + 8);
  nlohmann::json j = nlohmann::json::parse(hdr, hdr + header_len, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Bad(path, "header is not a JSON object");
  const uint64_t data_size = size - 8 - header_len;
  const uint8_t* data_base = base + 8 + header_len;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return Bad(path, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) return Bad(path, "__metadata__ values must be strings");
        f->metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      return Bad(path, absl::StrCat("tensor '", name, "': entry needs dtype, shape and data_offsets"));
    const auto& jd = v["dtype"];
    const auto& js = v["shape"];
    const auto& jo = v["data_offsets"];
    if (!jd.is_string()) return Bad(path, absl::StrCat("tensor '", name, "': dtype is not a string"));
    TensorInfo t;
    t.name = name;
    if (!DTypeFromSafetensors(jd.get<std::string>(), &t.dtype))
      return Bad(path, absl::StrCat("tensor '", name, "': unsupported dtype ", jd.get<std::string>()));
    if (!js.is_array()) return Bad(path, absl::StrCat("tensor '", name, "': shape is not an array"));
    uint64_t numel = 1;
    for (const auto& d : js) {
      if (!d.is_number_unsigned()) return Bad(path, absl::StrCat("tensor '", name, "': shape has a non-integer or negative dimension"));
      uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > (uint64_t{1} << 62) / dim) return Bad(path, absl::StrCat("tensor '", name, "': shape overflows"));
      numel *= dim;
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    if (!jo.is_array() || jo.size() != 2 || !jo[0].is_number_unsigned() || !jo[1].is_number_unsigned())
      return Bad(path, absl::StrCat("tensor '", name, "': data_offsets must be two non-negative integers"));
    uint64_t begin = jo[0].get<uint64_t>(), end = jo[1].get<uint64_t>();
    if (begin > end || end > data_size)
      return Bad(path, absl::StrCat("tensor '", name, "': data_offsets [", begin, ", ", end,
                                    ") lie outside the data section of ", data_size, " bytes"));
    uint64_t expect = numel * DTypeSize(t.dtype);
    if (end - begin != expect)
      return Bad(path, absl::StrCat("tensor '", name, "': shape × dtype is ", expect, " bytes but data_offsets span ",
                                    end - begin));
    t.data = data_base + begin;
    t.nbytes = end - begin;
    if (end > begin) ranges.push_back({begin, end});
    f->tensors_.emplace(name, std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second)
      return Bad(path, absl::StrCat("tensor data ranges overlap at byte ", ranges[i].first));
  }
  return f;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorToWrite*> order;
  for (const auto& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->name < b->name; });
  nlohmann::json j = nlohmann::json::object();
  if (!metadata.empty()) j["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto* t : order) {
    uint64_t numel = 1;
    for (int64_t d : t->shape) numel *= static_cast<uint64_t>(d);
    if (numel * DTypeSize(t->dtype) != t->nbytes)
      return absl::InvalidArgumentError(absl::StrCat("tensor '", t->name, "': shape × dtype does not match ", t->nbytes, " bytes"));
    j[t->name] = {{"dtype", std::string(DTypeSafetensorsTag(t->dtype))},
                  {"shape", t->shape},
                  {"data_offsets", {offset, offset + t->nbytes}}};
    offset += t->nbytes;
  }
  std::string header = j.dump();
  while (header.size() % 8 != 0) header.push_back(' ');
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat(tmp, ": cannot open for writing"));
    uint64_t len = header.size();
    out.write(reinterpret_cast<const char*>(&len), 8);
    out.write(header.data(), header.size());
    for (const auto* t : order) out.write(static_cast<const char*>(t->data), t->nbytes);
    out.flush();
    if (!out) return absl::DataLossError(absl::StrCat(tmp, ": write failed"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ", std::strerror(errno)));
  return absl::OkStatus();
}

}  // namespace tessera
