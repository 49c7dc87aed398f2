// The sentencepiece-backed tokenizer. This header and its .cc include no Abseil header
// (Debian's sentencepiece_processor.h declares an absl::string_view that clashes).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tessera {
namespace sp_detail {

class SpModel {
 public:
  virtual ~SpModel() = default;
  virtual std::vector<int32_t> Encode(const std::string& text) const = 0;
  virtual std::string Decode(const std::vector<int32_t>& ids) const = 0;
  virtual std::string IdToPiece(int32_t id) const = 0;
  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
};

// Returns null and fills *error on failure.
std::unique_ptr<SpModel> LoadSpModel(const std::string& path, std::string* error);

}  // namespace sp_detail
}  // namespace tessera
