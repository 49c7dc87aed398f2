#include "runtime/tokenizer/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/tokenizer/sentencepiece_tokenizer.h"

namespace tessera {
namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(std::unique_ptr<sp_detail::SpModel> sp, bool add_bos) : sp_(std::move(sp)), add_bos_(add_bos) {}

  std::vector<int32_t> Encode(const std::string& text, bool add_bos) const override {
    std::vector<int32_t> ids;
    if (add_bos) ids.push_back(sp_->bos_id());
    if (!text.empty()) {
      std::vector<int32_t> body = sp_->Encode(text);
      ids.insert(ids.end(), body.begin(), body.end());
    }
    return ids;
  }
  std::string Decode(const std::vector<int32_t>& ids) const override { return sp_->Decode(ids); }
  std::string IdToPiece(int32_t id) const override { return sp_->IdToPiece(id); }
  int32_t vocab_size() const override { return sp_->vocab_size(); }
  int32_t bos_id() const override { return sp_->bos_id(); }
  int32_t eos_id() const override { return sp_->eos_id(); }
  bool add_bos() const override { return add_bos_; }

 private:
  std::unique_ptr<sp_detail::SpModel> sp_;
  bool add_bos_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceFile(const std::string& path, bool add_bos) {
  if (!std::filesystem::exists(path)) return absl::NotFoundError(absl::StrCat(path, ": no such tokenizer file"));
  std::string error;
  auto sp = sp_detail::LoadSpModel(path, &error);
  if (!sp) return absl::InvalidArgumentError(absl::StrCat(path, ": not a sentencepiece model: ", error));
  return std::unique_ptr<Tokenizer>(new SentencePieceTokenizer(std::move(sp), add_bos));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& dir) {
  namespace fs = std::filesystem;
  bool add_bos = true;
  const fs::path cfg = fs::path(dir) / "tokenizer_config.json";
  if (fs::exists(cfg)) {
    std::ifstream in(cfg);
    std::stringstream ss;
    ss << in.rdbuf();
    nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
    if (j.is_discarded() || !j.is_object())
      return absl::InvalidArgumentError(absl::StrCat(cfg.string(), ": not a JSON object"));
    if (j.contains("add_bos_token") && j["add_bos_token"].is_boolean()) add_bos = j["add_bos_token"].get<bool>();
  }
  return LoadSentencePieceFile((fs::path(dir) / "tokenizer.model").string(), add_bos);
}

}  // namespace tessera
