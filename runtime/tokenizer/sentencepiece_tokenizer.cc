// The only translation unit that includes sentencepiece (no Abseil here).
#include "runtime/tokenizer/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

namespace tessera {
namespace sp_detail {
namespace {

class SpModelImpl final : public SpModel {
 public:
  explicit SpModelImpl(std::unique_ptr<sentencepiece::SentencePieceProcessor> sp) : sp_(std::move(sp)) {}

  std::vector<int32_t> Encode(const std::string& text) const override {
    std::vector<int> ids;
    sp_->Encode(text, &ids);
    return std::vector<int32_t>(ids.begin(), ids.end());
  }
  std::string Decode(const std::vector<int32_t>& ids) const override {
    std::vector<int> in;
    in.reserve(ids.size());
    const int n = sp_->GetPieceSize();
    for (int32_t id : ids) {
      if (id >= 0 && id < n) in.push_back(id);
    }
    std::string out;
    sp_->Decode(in, &out);
    return out;
  }
  std::string IdToPiece(int32_t id) const override {
    if (id < 0 || id >= sp_->GetPieceSize()) return "";
    return sp_->IdToPiece(id);
  }
  int32_t vocab_size() const override { return sp_->GetPieceSize(); }
  int32_t bos_id() const override { return sp_->bos_id(); }
  int32_t eos_id() const override { return sp_->eos_id(); }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

}  // namespace

std::unique_ptr<SpModel> LoadSpModel(const std::string& path, std::string* error) {
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto status = sp->Load(path);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return std::make_unique<SpModelImpl>(std::move(sp));
}

}  // namespace sp_detail
}  // namespace tessera
