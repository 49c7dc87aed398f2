#include "server/openai/openai_api.h"

#include <chrono>
#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/core/status_mapping.h"
#include "server/openai/openai_protocol.h"

namespace tessera {
namespace {

using json = nlohmann::json;

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void SendError(const std::shared_ptr<http::ResponseWriter>& writer, const absl::Status& st) {
  const int code = HttpStatusFor(st);
  http::WriteJsonError(writer, code, std::string(st.message()), OpenAiErrorType(code));
}

// One HTTP generation request: n engine requests whose outputs become one response or
// one SSE stream. Shared by the engine callbacks and the connection's close hook.
struct Job {
  struct Choice {
    uint64_t engine_id = 0;
    bool submitted = false;
    bool done = false;
    bool role_sent = false;
    std::string text;
    std::vector<SampleResult> samples;
    std::string finish_reason;
    Usage usage;
  };

  ServingContext* ctx = nullptr;
  std::shared_ptr<http::ResponseWriter> writer;
  openai::ParsedRequest req;
  std::string id;
  int64_t created = 0;
  std::mutex mu;
  std::vector<Choice> choices;
  int remaining = 0;
  bool abandoned = false;  // a choice could not be queued: the error was already sent
  bool failed = false;
  absl::Status error;

  json ChunkBase() const {
    return {{"id", id}, {"object", req.chat ? "chat.completion.chunk" : "text_completion"}, {"created", created},
            {"model", req.model}};
  }

  void CancelAll() {
    std::vector<uint64_t> ids;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (abandoned) return;
      for (const Choice& c : choices)
        if (c.submitted && !c.done) ids.push_back(c.engine_id);
    }
    for (uint64_t i : ids) ctx->Cancel(i);
  }

  // Engine thread: one output of choice `index`.
  void OnOutput(size_t index, RequestOutput out) {
    std::lock_guard<std::mutex> lock(mu);
    if (abandoned) return;
    Choice& c = choices[index];
    const Tokenizer& tok = ctx->tokenizer();
    const size_t offset_before = c.text.size();
    c.text += out.text;
    c.samples.insert(c.samples.end(), out.logprobs.begin(), out.logprobs.end());
    if (out.finished && out.finish_reason == "error") {
      failed = true;
      error = out.status.ok() ? absl::InternalError("generation failed") : out.status;
    }
    if (req.stream && out.finish_reason != "error" && !writer->closed()) {
      const bool has_content = !out.text.empty() || (req.top_logprobs >= 0 && !out.logprobs.empty());
      if (req.chat && !c.role_sent) {
        json chunk = ChunkBase();
        chunk["choices"] = {{{"index", index}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr},
                             {"finish_reason", nullptr}}};
        writer->SendEvent(chunk.dump());
        c.role_sent = true;
      }
      if (has_content || out.finished) {
        json choice = {{"index", index}, {"finish_reason", out.finished ? json(out.finish_reason) : json(nullptr)}};
        json lp = out.logprobs.empty() || req.top_logprobs < 0
                      ? json(nullptr)
                      : openai::LogprobsJson(tok, out.logprobs, req.chat, offset_before);
        if (req.chat) {
          choice["delta"] = out.text.empty() ? json::object() : json{{"content", out.text}};
        } else {
          choice["text"] = out.text;
        }
        choice["logprobs"] = lp;
        json chunk = ChunkBase();
        chunk["choices"] = json::array({choice});
        if (!writer->SendEvent(chunk.dump())) {
          // The client cannot keep up or left: stop generating for it.
        }
      }
    }
    if (!out.finished) return;
    c.done = true;
    c.finish_reason = out.finish_reason;
    c.usage = out.usage;
    if (--remaining > 0) return;
    Complete();
  }

  // Called with mu held once every choice has finished.
  void Complete() {
    int prompt = 0, completion = 0, cached = 0;
    for (const Choice& c : choices) {
      prompt = c.usage.prompt_tokens;
      completion += c.usage.completion_tokens;
      cached = std::max(cached, c.usage.cached_prompt_tokens);
    }
    json usage = openai::UsageJson(prompt, completion, cached);
    if (req.stream) {
      if (writer->closed()) return;
      if (failed) {
        const int code = HttpStatusFor(error);
        writer->SendEvent(http::JsonErrorBody(code, std::string(error.message()), OpenAiErrorType(code)));
      } else if (req.include_usage) {
        json chunk = ChunkBase();
        chunk["choices"] = json::array();
        chunk["usage"] = usage;
        writer->SendEvent(chunk.dump());
      }
      writer->SendEvent("[DONE]");
      writer->EndStream();
      return;
    }
    if (failed) {
      SendError(writer, error);
      return;
    }
    const Tokenizer& tok = ctx->tokenizer();
    json out_choices = json::array();
    for (size_t i = 0; i < choices.size(); ++i) {
      const Choice& c = choices[i];
      json lp = req.top_logprobs < 0 ? json(nullptr) : openai::LogprobsJson(tok, c.samples, req.chat, 0);
      if (req.chat) {
        out_choices.push_back({{"index", i},
                               {"message", {{"role", "assistant"}, {"content", c.text}}},
                               {"logprobs", lp},
                               {"finish_reason", c.finish_reason}});
      } else {
        out_choices.push_back({{"index", i}, {"text", c.text}, {"logprobs", lp}, {"finish_reason", c.finish_reason}});
      }
    }
    json body = {{"id", id}, {"object", req.chat ? "chat.completion" : "text_completion"}, {"created", created},
                 {"model", req.model}, {"choices", out_choices}, {"usage", usage}};
    writer->Send(200, "application/json", body.dump());
  }
};

}  // namespace

absl::Status OpenAiApi::Register(http::HttpServer& server) {
  auto post = [&](const char* path, bool chat) {
    return server.Handle("POST", path, [this, chat](const http::HttpRequest& r, std::shared_ptr<http::ResponseWriter> w) {
      Generate(r, std::move(w), chat);
    });
  };
  if (absl::Status st = post("/v1/completions", false); !st.ok()) return st;
  if (absl::Status st = post("/v1/chat/completions", true); !st.ok()) return st;
  if (absl::Status st = server.Handle("GET", "/v1/models", [this](const http::HttpRequest&, std::shared_ptr<http::ResponseWriter> w) {
        Models(std::move(w));
      }); !st.ok())
    return st;
  if (absl::Status st = server.Handle("GET", "/health", [](const http::HttpRequest&, std::shared_ptr<http::ResponseWriter> w) {
        w->Send(200, "application/json", R"({"status":"ok"})");
      }); !st.ok())
    return st;
  if (absl::Status st = server.Handle("GET", "/ready", [this](const http::HttpRequest&, std::shared_ptr<http::ResponseWriter> w) {
        if (ctx_->ready()) {
          w->Send(200, "application/json", R"({"status":"ready"})");
        } else {
          w->Send(503, "application/json",
                  ctx_->draining() ? R"({"status":"draining"})" : R"({"status":"starting"})");
        }
      }); !st.ok())
    return st;
  return server.Handle("GET", "/metrics", [this](const http::HttpRequest&, std::shared_ptr<http::ResponseWriter> w) {
    ctx_->metrics().Refresh(ctx_->engine().Stats());
    w->Send(200, "text/plain; version=0.0.4; charset=utf-8", ctx_->metrics().Serialize());
  });
}

void OpenAiApi::Models(std::shared_ptr<http::ResponseWriter> writer) {
  json data = json::array();
  const int64_t now = NowSeconds();
  data.push_back({{"id", ctx_->model_name()}, {"object", "model"}, {"created", now}, {"owned_by", "tessera"},
                  {"root", ctx_->model_name()}, {"parent", nullptr}, {"max_model_len", ctx_->engine().max_model_len()}});
  {
    for (const std::string& name : ctx_->AdapterNames()) {
      data.push_back({{"id", name}, {"object", "model"}, {"created", now}, {"owned_by", "tessera"},
                      {"root", name}, {"parent", ctx_->model_name()}});
    }
  }
  writer->Send(200, "application/json", json({{"object", "list"}, {"data", data}}).dump());
}

void OpenAiApi::Generate(const http::HttpRequest& request, std::shared_ptr<http::ResponseWriter> writer, bool chat) {
  openai::ApiLimits limits;
  limits.model_name = ctx_->model_name();
  limits.max_model_len = ctx_->engine().max_model_len();
  limits.max_n = ctx_->options().max_n;
  limits.default_max_tokens = ctx_->options().default_max_tokens;
  auto parsed = openai::ParseRequest(request.body, chat, limits, ctx_->tokenizer(), ctx_->chat_template(),
                                     [this](const std::string& name) { return ctx_->ResolveModel(name); });
  if (!parsed.ok()) {
    ctx_->metrics().RecordRequest("", "rejected");
    SendError(writer, parsed.status());
    return;
  }
  auto job = std::make_shared<Job>();
  job->ctx = ctx_;
  job->writer = writer;
  job->req = std::move(*parsed);
  job->id = absl::StrCat(chat ? "chatcmpl-" : "cmpl-", request.request_id);
  job->created = NowSeconds();
  job->choices.resize(job->req.n);
  job->remaining = job->req.n;
  writer->OnClose([weak = std::weak_ptr<Job>(job)] {
    if (auto j = weak.lock()) j->CancelAll();
  });
  // Every choice is queued before any response byte is sent, so admission errors (429,
  // 503, 400) are real HTTP statuses even for streams; outputs wait on the job's lock.
  std::lock_guard<std::mutex> lock(job->mu);
  for (int i = 0; i < job->req.n; ++i) {
    GenerationRequest g = job->req.base;
    g.request_id = request.request_id;
    if (g.sampling.seed.has_value()) g.sampling.seed = *g.sampling.seed + static_cast<uint64_t>(i);
    auto id = ctx_->Submit(std::move(g), [job, i](RequestOutput o) { job->OnOutput(static_cast<size_t>(i), std::move(o)); });
    if (!id.ok()) {
      job->abandoned = true;
      for (auto& c : job->choices) {
        if (c.submitted) ctx_->Cancel(c.engine_id);
      }
      SendError(writer, id.status());
      return;
    }
    job->choices[i].engine_id = *id;
    job->choices[i].submitted = true;
  }
  if (job->req.stream) writer->StartStream(200, {{"Cache-Control", "no-cache"}, {"Content-Type", "text/event-stream"}});
}

}  // namespace tessera
