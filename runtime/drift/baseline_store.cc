// Baseline persistence: JSON encoding and atomic file replacement.
#include "runtime/drift/baseline_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "runtime/common/status_macros.h"

namespace tessera::drift {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::string_view kFormat = "tessera.drift.baseline";
constexpr int kVersion = 1;
constexpr std::string_view kSuffix = ".baseline.json";

std::string EncodeName(std::string_view name) {
  if (name.empty()) return "%";  // no encoded non-empty name is a lone '%'
  std::string out;
  for (unsigned char c : name) {
    if (std::isalnum(c) || c == '_' || c == '-') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppendFormat(&out, "%%%02X", c);
    }
  }
  return out;
}

absl::Status ErrnoError(std::string_view what, const std::string& path) {
  return absl::InternalError(
      absl::StrCat(std::string(what), " ", path, ": ", std::strerror(errno)));
}

absl::Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("cannot write", path);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

}  // namespace

std::string BaselineToJson(const BaselineData& data) {
  json numeric = json::object();
  for (int f = 0; f < kNumNumericFeatures; ++f) {
    numeric[std::string(NumericFeatureName(f))] = data.values[f];
  }
  json finish = json::object();
  for (const auto& [name, count] : data.finish_reasons) finish[name] = count;
  json doc = {{"format", std::string(kFormat)},
              {"version", kVersion},
              {"model", data.model},
              {"adapter", data.adapter},
              {"created_unix_ms", absl::ToUnixMillis(data.created)},
              {"count", data.count},
              {"numeric", std::move(numeric)},
              {std::string(kFinishReasonFeature), std::move(finish)},
              {std::string(kTokenBucketFeature), data.token_buckets}};
  return doc.dump();
}

absl::StatusOr<BaselineData> BaselineFromJson(std::string_view text) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) return absl::DataLossError("baseline is not JSON");
  if (doc.value("format", "") != kFormat || doc.value("version", 0) != kVersion) {
    return absl::DataLossError(
        absl::StrCat("not a ", std::string(kFormat), " v", kVersion, " document"));
  }
  try {
    BaselineData data;
    data.model = doc.at("model").get<std::string>();
    data.adapter = doc.at("adapter").get<std::string>();
    data.created = absl::FromUnixMillis(doc.at("created_unix_ms").get<int64_t>());
    data.count = doc.at("count").get<int64_t>();
    const json& numeric = doc.at("numeric");
    for (int f = 0; f < kNumNumericFeatures; ++f) {
      data.values[f] = numeric.at(std::string(NumericFeatureName(f))).get<std::vector<double>>();
    }
    for (const auto& [name, count] : doc.at(std::string(kFinishReasonFeature)).items()) {
      data.finish_reasons[name] = count.get<int64_t>();
    }
    const auto buckets = doc.at(std::string(kTokenBucketFeature)).get<std::vector<int64_t>>();
    if (buckets.size() != kNumTokenBuckets) {
      return absl::DataLossError(absl::StrCat("baseline has ", buckets.size(),
                                              " token buckets, expected ", kNumTokenBuckets));
    }
    std::copy(buckets.begin(), buckets.end(), data.token_buckets.begin());
    return data;
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrCat("malformed baseline: ", e.what()));
  }
}

std::string BaselineStore::PathFor(std::string_view model, std::string_view adapter) const {
  return (fs::path(dir_) /
          absl::StrCat(EncodeName(model), ".", EncodeName(adapter), std::string(kSuffix)))
      .string();
}

absl::Status BaselineStore::Init() const {
  if (!enabled()) return absl::OkStatus();
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir_, ": ", ec.message()));
  return absl::OkStatus();
}

absl::Status BaselineStore::Save(const BaselineData& data) const {
  if (!enabled()) return absl::OkStatus();
  static std::atomic<uint64_t> sequence{0};
  const std::string path = PathFor(data.model, data.adapter);
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid(), ".", sequence.fetch_add(1));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot create", tmp);
  absl::Status st = WriteAll(fd, BaselineToJson(data), tmp);
  // The data must be on disk before the rename makes it the baseline.
  if (st.ok() && ::fsync(fd) != 0) st = ErrnoError("cannot sync", tmp);
  if (::close(fd) != 0 && st.ok()) st = ErrnoError("cannot close", tmp);
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0)
    st = ErrnoError("cannot rename to", path);
  if (!st.ok()) ::unlink(tmp.c_str());
  return st;
}

absl::Status BaselineStore::Remove(std::string_view model, std::string_view adapter) const {
  if (!enabled()) return absl::OkStatus();
  const std::string path = PathFor(model, adapter);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoError("cannot remove", path);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<BaselineData>> BaselineStore::LoadAll() const {
  std::vector<BaselineData> out;
  if (!enabled()) return out;
  std::error_code ec;
  std::vector<fs::path> paths;
  for (const fs::directory_entry& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file() && name.size() > kSuffix.size() &&
        name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0) {
      paths.push_back(e.path());
    }
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", dir_, ": ", ec.message()));
  std::sort(paths.begin(), paths.end());
  for (const fs::path& p : paths) {
    std::ifstream in(p);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) return absl::InternalError(absl::StrCat("cannot read ", p.string()));
    absl::StatusOr<BaselineData> data = BaselineFromJson(text.str());
    if (!data.ok()) {
      return absl::DataLossError(absl::StrCat(p.string(), ": ", data.status().message()));
    }
    out.push_back(*std::move(data));
  }
  return out;
}

}  // namespace tessera::drift
