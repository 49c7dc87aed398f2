// Incremental detokenization for streaming: turns one new token id at a time into a text
// delta, never emitting half a UTF-8 character, and keeping sentencepiece's spacing right
// by decoding a short window of preceding ids alongside the new one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/tokenizer/tokenizer.h"

namespace tessera {

class IncrementalDetokenizer {
 public:
  // `context` is the prompt's ids: the first generated token is decoded after them.
  IncrementalDetokenizer(const Tokenizer* tokenizer, const std::vector<int32_t>& context);

  // Adds one generated id; returns the text that became final (possibly empty).
  std::string Append(int32_t id);
  // Emits whatever is still held back (e.g. a byte sequence that never completed).
  std::string Flush();
  // All text emitted so far.
  const std::string& text() const { return text_; }

 private:
  static constexpr int kContextWindow = 6;
  const Tokenizer* tokenizer_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;
  size_t read_offset_ = 0;
  std::string text_;
};

// True when `s` ends in the middle of a UTF-8 sequence or with U+FFFD (a replacement
// character that may still become a real character once more bytes arrive).
bool EndsWithIncompleteUtf8(const std::string& s);

}  // namespace tessera
