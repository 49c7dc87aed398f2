// The project's tokenizer interface. The sentencepiece implementation lives behind
// sentencepiece_tokenizer.cc alone (Debian's sentencepiece headers clash with Abseil).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Token ids of `text`; BOS first when add_bos.
  virtual std::vector<int32_t> Encode(const std::string& text, bool add_bos) const = 0;
  // Text of ids. Special tokens (BOS/EOS/...) are dropped. Incomplete UTF-8 byte
  // sequences decode to U+FFFD, as sentencepiece does.
  virtual std::string Decode(const std::vector<int32_t>& ids) const = 0;
  virtual std::string IdToPiece(int32_t id) const = 0;
  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  // Whether BOS is prepended to prompts (tokenizer_config.json add_bos_token).
  virtual bool add_bos() const = 0;
};

// Loads DIR/tokenizer.model, honouring DIR/tokenizer_config.json (add_bos_token).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& dir);
// Loads one sentencepiece model file.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceFile(const std::string& path, bool add_bos = true);

}  // namespace tessera
