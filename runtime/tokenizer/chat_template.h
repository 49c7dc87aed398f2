// Chat templates that turn a list of messages into prompt token ids: Llama-2's [INST]
// format and a plain "Role: text" fallback for models without one.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tessera {

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

enum class ChatTemplateKind { kLlama2, kPlain };

// Picks the template from DIR/tokenizer_config.json's chat_template ([INST] -> Llama-2).
ChatTemplateKind DetectChatTemplate(const std::string& model_dir);
absl::StatusOr<ChatTemplateKind> ParseChatTemplateKind(const std::string& name);

// Token ids of the conversation, ending where the assistant's next reply begins.
absl::StatusOr<std::vector<int32_t>> ApplyChatTemplate(ChatTemplateKind kind, const Tokenizer& tok,
                                                       const std::vector<ChatMessage>& messages);

}  // namespace tessera
