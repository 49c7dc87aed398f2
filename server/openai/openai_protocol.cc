#include "server/openai/openai_protocol.h"

#include "absl/strings/str_cat.h"

namespace tessera::openai {
namespace {

using json = nlohmann::json;

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

absl::Status ReadFloat(const json& j, const char* key, float lo, float hi, float* out) {
  if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
  if (!j[key].is_number()) return Invalid(absl::StrCat("'", key, "' must be a number"));
  double v = j[key].get<double>();
  if (!(v >= lo && v <= hi)) return Invalid(absl::StrCat("'", key, "' must be in [", lo, ", ", hi, "], got ", v));
  *out = static_cast<float>(v);
  return absl::OkStatus();
}

absl::Status ReadInt(const json& j, const char* key, int64_t lo, int64_t hi, int64_t* out) {
  if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
  if (!j[key].is_number_integer()) return Invalid(absl::StrCat("'", key, "' must be an integer"));
  int64_t v = j[key].get<int64_t>();
  if (v < lo || v > hi) return Invalid(absl::StrCat("'", key, "' must be in [", lo, ", ", hi, "], got ", v));
  *out = v;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> PromptIds(const json& p, const Tokenizer& tok) {
  if (p.is_string()) return tok.Encode(p.get<std::string>(), tok.add_bos());
  if (p.is_array() && p.size() == 1 && p[0].is_string()) return tok.Encode(p[0].get<std::string>(), tok.add_bos());
  if (p.is_array() && !p.empty() && p[0].is_number_integer()) {
    std::vector<int32_t> ids;
    for (const auto& v : p) {
      if (!v.is_number_integer()) return Invalid("'prompt' token arrays must hold integers only");
      int64_t id = v.get<int64_t>();
      if (id < 0 || id >= tok.vocab_size())
        return Invalid(absl::StrCat("prompt token id ", id, " is outside the vocabulary of ", tok.vocab_size()));
      ids.push_back(static_cast<int32_t>(id));
    }
    return ids;
  }
  if (p.is_array() && p.size() > 1) return Invalid("batched prompts are not supported: send one prompt per request");
  return Invalid("'prompt' must be a string or an array of token ids");
}

absl::StatusOr<std::vector<ChatMessage>> Messages(const json& m) {
  if (!m.is_array() || m.empty()) return Invalid("'messages' must be a non-empty array");
  std::vector<ChatMessage> out;
  for (const auto& msg : m) {
    if (!msg.is_object() || !msg.contains("role") || !msg["role"].is_string())
      return Invalid("each message needs a string 'role'");
    ChatMessage cm;
    cm.role = msg["role"].get<std::string>();
    const json& c = msg.contains("content") ? msg["content"] : json();
    if (c.is_string()) {
      cm.content = c.get<std::string>();
    } else if (c.is_array()) {
      for (const auto& part : c) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
          return Invalid("only text content parts are supported");
        cm.content += part["text"].get<std::string>();
      }
    } else if (!c.is_null()) {
      return Invalid("message 'content' must be a string or a list of text parts");
    }
    out.push_back(std::move(cm));
  }
  return out;
}

}  // namespace

absl::StatusOr<ParsedRequest> ParseRequest(const std::string& body, bool chat, const ApiLimits& limits,
                                           const Tokenizer& tok, ChatTemplateKind chat_template,
                                           const std::function<absl::StatusOr<uint64_t>(const std::string&)>& resolve_adapter) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Invalid("the request body is not valid JSON");
  if (!j.is_object()) return Invalid("the request body must be a JSON object");
  ParsedRequest r;
  r.chat = chat;
  if (!j.contains("model") || !j["model"].is_string()) return Invalid("'model' is required and must be a string");
  r.model = j["model"].get<std::string>();
  if (r.model != limits.model_name) {
    if (!resolve_adapter) return absl::NotFoundError(absl::StrCat("The model '", r.model, "' does not exist"));
    auto id = resolve_adapter(r.model);
    if (!id.ok()) return absl::NotFoundError(absl::StrCat("The model '", r.model, "' does not exist"));
    r.adapter = r.model;
    r.base.adapter = r.model;
    r.base.adapter_id = *id;
  }
  if (chat) {
    auto msgs = Messages(j.contains("messages") ? j["messages"] : json());
    if (!msgs.ok()) return msgs.status();
    auto ids = ApplyChatTemplate(chat_template, tok, *msgs);
    if (!ids.ok()) return Invalid(std::string(ids.status().message()));
    r.base.prompt_ids = *ids;
  } else {
    if (!j.contains("prompt")) return Invalid("'prompt' is required");
    auto ids = PromptIds(j["prompt"], tok);
    if (!ids.ok()) return ids.status();
    r.base.prompt_ids = *ids;
  }
  if (r.base.prompt_ids.empty()) return Invalid("the prompt is empty");
  const int64_t prompt_len = static_cast<int64_t>(r.base.prompt_ids.size());
  if (prompt_len >= limits.max_model_len)
    return Invalid(absl::StrCat("This model's maximum context length is ", limits.max_model_len,
                                " tokens. However, the prompt has ", prompt_len, " tokens."));
  int64_t max_tokens = -1;
  const char* max_key = chat && j.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  if (absl::Status st = ReadInt(j, max_key, 1, 1 << 30, &max_tokens); !st.ok()) return st;
  if (max_tokens < 0) max_tokens = chat ? limits.max_model_len - prompt_len : limits.default_max_tokens;
  if (prompt_len + max_tokens > limits.max_model_len)
    return Invalid(absl::StrCat("This model's maximum context length is ", limits.max_model_len,
                                " tokens. However, you requested ", prompt_len + max_tokens, " tokens (", prompt_len,
                                " in the prompt, ", max_tokens, " in the completion)."));
  r.base.max_tokens = static_cast<int32_t>(max_tokens);
  SamplingParams& s = r.base.sampling;
  if (absl::Status st = ReadFloat(j, "temperature", 0.0f, 2.0f, &s.temperature); !st.ok()) return st;
  if (absl::Status st = ReadFloat(j, "top_p", 1e-6f, 1.0f, &s.top_p); !st.ok()) return st;
  if (absl::Status st = ReadFloat(j, "min_p", 0.0f, 1.0f, &s.min_p); !st.ok()) return st;
  if (absl::Status st = ReadFloat(j, "presence_penalty", -2.0f, 2.0f, &s.presence_penalty); !st.ok()) return st;
  if (absl::Status st = ReadFloat(j, "frequency_penalty", -2.0f, 2.0f, &s.frequency_penalty); !st.ok()) return st;
  if (absl::Status st = ReadFloat(j, "repetition_penalty", 0.01f, 10.0f, &s.repetition_penalty); !st.ok()) return st;
  int64_t top_k = 0, seed = -1, n = 1;
  if (absl::Status st = ReadInt(j, "top_k", -1, 1 << 20, &top_k); !st.ok()) return st;
  s.top_k = static_cast<int32_t>(top_k);
  if (absl::Status st = ReadInt(j, "seed", 0, INT64_MAX, &seed); !st.ok()) return st;
  if (seed >= 0) s.seed = static_cast<uint64_t>(seed);
  if (absl::Status st = ReadInt(j, "n", 1, limits.max_n, &n); !st.ok()) return st;
  r.n = static_cast<int32_t>(n);
  if (j.contains("stop") && !j["stop"].is_null()) {
    const json& stop = j["stop"];
    if (stop.is_string()) {
      r.base.stop_strings.push_back(stop.get<std::string>());
    } else if (stop.is_array() && stop.size() <= 16) {
      for (const auto& v : stop) {
        if (!v.is_string()) return Invalid("'stop' must be a string or a list of strings");
        r.base.stop_strings.push_back(v.get<std::string>());
      }
    } else {
      return Invalid("'stop' must be a string or a list of at most 16 strings");
    }
  }
  if (j.contains("ignore_eos") && j["ignore_eos"].is_boolean()) r.base.ignore_eos = j["ignore_eos"].get<bool>();
  if (j.contains("stream") && !j["stream"].is_null()) {
    if (!j["stream"].is_boolean()) return Invalid("'stream' must be a boolean");
    r.stream = j["stream"].get<bool>();
  }
  if (j.contains("stream_options") && j["stream_options"].is_object()) {
    if (!r.stream) return Invalid("'stream_options' is only allowed when 'stream' is true");
    r.include_usage = j["stream_options"].value("include_usage", false);
  }
  if (chat) {
    if (j.contains("logprobs") && j["logprobs"].is_boolean() && j["logprobs"].get<bool>()) {
      int64_t top = 0;
      if (absl::Status st = ReadInt(j, "top_logprobs", 0, 20, &top); !st.ok()) return st;
      r.top_logprobs = static_cast<int32_t>(top);
    }
  } else {
    int64_t lp = -1;
    if (absl::Status st = ReadInt(j, "logprobs", 0, 20, &lp); !st.ok()) return st;
    r.top_logprobs = static_cast<int32_t>(lp);
  }
  s.logprobs = r.top_logprobs;
  if (absl::Status st = s.Validate(); !st.ok()) return Invalid(std::string(st.message()));
  return r;
}

std::string TokenText(const Tokenizer& tok, int32_t id) {
  std::string piece = tok.IdToPiece(id);
  std::string out;
  for (size_t i = 0; i < piece.size(); ++i) {
    if (piece.compare(i, 3, "\xE2\x96\x81") == 0) {  // U+2581, sentencepiece's word marker
      out += ' ';
      i += 2;
    } else {
      out += piece[i];
    }
  }
  return out;
}

nlohmann::json LogprobsJson(const Tokenizer& tok, const std::vector<SampleResult>& samples, bool chat,
                            size_t text_offset_base) {
  if (chat) {
    json content = json::array();
    for (const SampleResult& s : samples) {
      json top = json::array();
      for (const TokenLogprob& t : s.top) top.push_back({{"token", TokenText(tok, t.id)}, {"logprob", t.logprob}});
      content.push_back({{"token", TokenText(tok, s.token)}, {"logprob", s.logprob}, {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  json tokens = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  size_t offset = text_offset_base;
  for (const SampleResult& s : samples) {
    std::string text = TokenText(tok, s.token);
    tokens.push_back(text);
    lps.push_back(s.logprob);
    json top = json::object();
    for (const TokenLogprob& t : s.top) top[TokenText(tok, t.id)] = t.logprob;
    tops.push_back(top);
    offsets.push_back(offset);
    offset += text.size();
  }
  return {{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

nlohmann::json UsageJson(int prompt_tokens, int completion_tokens, int cached_tokens) {
  json u = {{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion_tokens},
            {"total_tokens", prompt_tokens + completion_tokens}};
  if (cached_tokens > 0) u["prompt_tokens_details"] = {{"cached_tokens", cached_tokens}};
  return u;
}

}  // namespace tessera::openai
