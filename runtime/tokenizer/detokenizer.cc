#include "runtime/tokenizer/detokenizer.h"

namespace tessera {

bool EndsWithIncompleteUtf8(const std::string& s) {
  if (s.size() >= 3 && static_cast<unsigned char>(s[s.size() - 3]) == 0xEF &&
      static_cast<unsigned char>(s[s.size() - 2]) == 0xBF && static_cast<unsigned char>(s[s.size() - 1]) == 0xBD)
    return true;
  // Walk back over continuation bytes to the lead byte and check the sequence length.
  size_t i = s.size();
  int cont = 0;
  while (i > 0 && cont < 4 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) {
    --i;
    ++cont;
  }
  if (i == 0) return cont > 0;
  unsigned char lead = static_cast<unsigned char>(s[i - 1]);
  int need = 0;
  if ((lead & 0x80) == 0) need = 0;
  else if ((lead & 0xE0) == 0xC0) need = 1;
  else if ((lead & 0xF0) == 0xE0) need = 2;
  else if ((lead & 0xF8) == 0xF0) need = 3;
  else return false;
  return cont < need;
}

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer* tokenizer, const std::vector<int32_t>& context)
    : tokenizer_(tokenizer) {
  const size_t keep = std::min<size_t>(context.size(), kContextWindow);
  ids_.assign(context.end() - keep, context.end());
  prefix_offset_ = 0;
  read_offset_ = ids_.size();
}

std::string IncrementalDetokenizer::Append(int32_t id) {
  ids_.push_back(id);
  const std::vector<int32_t> prefix(ids_.begin() + prefix_offset_, ids_.begin() + read_offset_);
  const std::vector<int32_t> full(ids_.begin() + prefix_offset_, ids_.end());
  const std::string prefix_text = tokenizer_->Decode(prefix);
  const std::string new_text = tokenizer_->Decode(full);
  if (new_text.size() <= prefix_text.size() || EndsWithIncompleteUtf8(new_text)) return "";
  // The window's decoding of the old ids is a prefix of the new decoding except in
  // pathological cases; fall back to the common prefix to stay consistent.
  size_t common = 0;
  while (common < prefix_text.size() && prefix_text[common] == new_text[common]) ++common;
  std::string delta = new_text.substr(common);
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  // Keep the window short so each step decodes O(1) ids.
  if (prefix_offset_ > 64) {
    ids_.erase(ids_.begin(), ids_.begin() + static_cast<long>(prefix_offset_));
    read_offset_ -= prefix_offset_;
    prefix_offset_ = 0;
  }
  text_ += delta;
  return delta;
}

std::string IncrementalDetokenizer::Flush() {
  const std::vector<int32_t> prefix(ids_.begin() + prefix_offset_, ids_.begin() + read_offset_);
  const std::vector<int32_t> full(ids_.begin() + prefix_offset_, ids_.end());
  const std::string prefix_text = tokenizer_->Decode(prefix);
  const std::string new_text = tokenizer_->Decode(full);
  if (new_text.size() <= prefix_text.size()) return "";
  std::string delta = new_text.substr(prefix_text.size());
  prefix_offset_ = read_offset_ = ids_.size();
  text_ += delta;
  return delta;
}

}  // namespace tessera
