#include "runtime/tokenizer/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace tessera {

ChatTemplateKind DetectChatTemplate(const std::string& model_dir) {
  std::ifstream in(std::filesystem::path(model_dir) / "tokenizer_config.json");
  if (!in) return ChatTemplateKind::kPlain;
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (j.is_object() && j.contains("chat_template") && j["chat_template"].is_string() &&
      j["chat_template"].get<std::string>().find("[INST]") != std::string::npos)
    return ChatTemplateKind::kLlama2;
  return ChatTemplateKind::kPlain;
}

absl::StatusOr<ChatTemplateKind> ParseChatTemplateKind(const std::string& name) {
  if (name == "llama2") return ChatTemplateKind::kLlama2;
  if (name == "plain") return ChatTemplateKind::kPlain;
  return absl::InvalidArgumentError(absl::StrCat("unknown chat template '", name, "' (llama2 or plain)"));
}

namespace {

absl::Status CheckRoles(const std::vector<ChatMessage>& messages) {
  if (messages.empty()) return absl::InvalidArgumentError("'messages' must not be empty");
  for (const auto& m : messages) {
    if (m.role != "system" && m.role != "user" && m.role != "assistant")
      return absl::InvalidArgumentError(absl::StrCat("unknown message role '", m.role, "'"));
  }
  return absl::OkStatus();
}

void Append(std::vector<int32_t>& ids, const std::vector<int32_t>& more) { ids.insert(ids.end(), more.begin(), more.end()); }

}  // namespace

absl::StatusOr<std::vector<int32_t>> ApplyChatTemplate(ChatTemplateKind kind, const Tokenizer& tok,
                                                       const std::vector<ChatMessage>& messages) {
  if (absl::Status st = CheckRoles(messages); !st.ok()) return st;
  std::vector<int32_t> ids;
  if (kind == ChatTemplateKind::kPlain) {
    std::string text;
    for (const auto& m : messages) {
      std::string role = m.role;
      role[0] = static_cast<char>(std::toupper(role[0]));
      absl::StrAppend(&text, role, ": ", m.content, "\n");
    }
    text += "Assistant:";
    return tok.Encode(text, tok.add_bos());
  }
  // Llama-2: the system prompt joins the first user turn; each finished exchange is
  // BOS [INST] user [/INST] answer EOS, and the last user turn is left open.
  std::string system;
  size_t i = 0;
  if (messages[0].role == "system") {
    system = absl::StrCat("<<SYS>>\n", messages[0].content, "\n<</SYS>>\n\n");
    i = 1;
  }
  bool first = true;
  for (; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role != "user") return absl::InvalidArgumentError("llama2 chat template: turns must alternate user/assistant, starting with user");
    std::string user = std::string(absl::StripAsciiWhitespace(m.content));
    if (first) user = system + user;
    first = false;
    std::string text = absl::StrCat("[INST] ", user, " [/INST]");
    if (i + 1 < messages.size()) {
      if (messages[i + 1].role != "assistant")
        return absl::InvalidArgumentError("llama2 chat template: turns must alternate user/assistant");
      absl::StrAppend(&text, " ", absl::StripAsciiWhitespace(messages[i + 1].content), " ");
      Append(ids, tok.Encode(text, true));
      ids.push_back(tok.eos_id());
      ++i;
    } else {
      Append(ids, tok.Encode(text, true));
    }
  }
  if (messages.back().role != "user")
    return absl::InvalidArgumentError("llama2 chat template: the last message must come from the user");
  return ids;
}

}  // namespace tessera
