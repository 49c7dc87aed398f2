#include "server/grpc/inference_service.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace tessera {

namespace v1 = tessera::v1;

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

namespace {

absl::StatusOr<GenerationRequest> ToGenerationRequest(ServingContext* ctx, const v1::GenerateRequest& in) {
  const std::string model = in.adapter().empty() ? in.model() : in.adapter();
  GenerationRequest r;
  if (!model.empty() && model != ctx->model_name()) {
    auto id = ctx->ResolveModel(model);
    if (!id.ok()) return id.status();
    r.adapter = model;
    r.adapter_id = *id;
  }
  r.request_id = in.request_id();
  const Tokenizer& tok = ctx->tokenizer();
  if (in.has_prompt_ids()) {
    r.prompt_ids.assign(in.prompt_ids().ids().begin(), in.prompt_ids().ids().end());
  } else {
    r.prompt_ids = tok.Encode(in.prompt(), tok.add_bos());
  }
  r.max_tokens = in.has_max_tokens() ? static_cast<int32_t>(std::min<uint32_t>(in.max_tokens(), 1u << 30))
                                      : ctx->options().default_max_tokens;
  const int64_t prompt_len = static_cast<int64_t>(r.prompt_ids.size());
  const int64_t max_len = ctx->engine().max_model_len();
  if (prompt_len + r.max_tokens > max_len)
    return absl::InvalidArgumentError(absl::StrCat("This model's maximum context length is ", max_len,
                                                   " tokens. However, you requested ", prompt_len + r.max_tokens,
                                                   " tokens (", prompt_len, " in the prompt, ", r.max_tokens,
                                                   " in the completion)."));
  const v1::SamplingParams& s = in.sampling();
  if (s.has_temperature()) r.sampling.temperature = s.temperature();
  if (s.has_top_p()) r.sampling.top_p = s.top_p();
  if (s.has_top_k()) r.sampling.top_k = s.top_k();
  if (s.has_min_p()) r.sampling.min_p = s.min_p();
  if (s.has_repetition_penalty()) r.sampling.repetition_penalty = s.repetition_penalty();
  if (s.has_presence_penalty()) r.sampling.presence_penalty = s.presence_penalty();
  if (s.has_frequency_penalty()) r.sampling.frequency_penalty = s.frequency_penalty();
  if (s.has_seed()) r.sampling.seed = s.seed();
  if (in.has_logprobs()) r.sampling.logprobs = in.logprobs();
  r.stop_strings.assign(in.stop().begin(), in.stop().end());
  r.stop_token_ids.assign(in.stop_token_ids().begin(), in.stop_token_ids().end());
  r.ignore_eos = in.ignore_eos();
  return r;
}

v1::FinishReason ToFinishReason(const std::string& reason) {
  if (reason == "stop") return v1::FINISH_REASON_STOP;
  if (reason == "length") return v1::FINISH_REASON_LENGTH;
  if (reason == "abort") return v1::FINISH_REASON_ABORT;
  return v1::FINISH_REASON_UNSPECIFIED;
}

// Streams engine outputs to one call. The engine callback and the reactor share State,
// so outputs arriving after the call ended are dropped safely.
class GenerateReactor : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  GenerateReactor(ServingContext* ctx, const v1::GenerateRequest* request) : ctx_(ctx), state_(std::make_shared<State>()) {
    state_->reactor = this;
    state_->request_id = request->request_id();
    auto req = ToGenerationRequest(ctx, *request);
    if (!req.ok()) {
      FinishOnce(ToGrpcStatus(req.status()));
      return;
    }
    std::shared_ptr<State> state = state_;
    const Tokenizer* tok = &ctx->tokenizer();
    const bool want_logprobs = req->sampling.logprobs >= 0;
    auto id = ctx->Submit(*std::move(req), [state, tok, want_logprobs](RequestOutput out) {
      Deliver(state, tok, want_logprobs, std::move(out));
    });
    if (!id.ok()) {
      FinishOnce(ToGrpcStatus(id.status()));
      return;
    }
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->engine_id = *id;
    state_->submitted = true;
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->writing = false;
      if (!ok) state_->broken = true;
    }
    if (!ok) Cancel();
    // Even a broken or cancelled call must reach Finish, or the server's shutdown waits on it.
    Pump(state_);
  }

  void OnCancel() override {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->broken = true;
    }
    Cancel();
    Pump(state_);
  }

  void OnDone() override {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->reactor = nullptr;
    }
    Cancel();
    delete this;
  }

 private:
  struct State {
    std::mutex mu;
    GenerateReactor* reactor = nullptr;
    std::deque<v1::GenerateResponse> queue;
    v1::GenerateResponse current;
    bool writing = false;
    bool final_queued = false;
    bool finish_called = false;
    bool broken = false;
    bool submitted = false;
    bool cancelled = false;
    uint64_t engine_id = 0;
    std::string request_id;
    grpc::Status final_status = grpc::Status::OK;
  };

  void Cancel() {
    uint64_t id = 0;
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      if (!state_->submitted || state_->cancelled || state_->final_queued) return;
      state_->cancelled = true;
      id = state_->engine_id;
    }
    ctx_->Cancel(id);
  }

  void FinishOnce(const grpc::Status& status) {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      if (state_->finish_called) return;
      state_->finish_called = true;
    }
    Finish(status);
  }

  static void Deliver(const std::shared_ptr<State>& state, const Tokenizer* tok, bool want_logprobs, RequestOutput out) {
    v1::GenerateResponse msg;
    msg.set_text(out.text);
    for (int32_t id : out.token_ids) msg.add_token_ids(id);
    for (const SampleResult& s : out.logprobs) {
      if (!want_logprobs) break;
      v1::TokenLogprobs* lp = msg.add_logprobs();
      lp->mutable_chosen()->set_id(s.token);
      lp->mutable_chosen()->set_logprob(s.logprob);
      lp->mutable_chosen()->set_piece(tok->IdToPiece(s.token));
      for (const TokenLogprob& t : s.top) {
        v1::TokenLogprob* alt = lp->add_top();
        alt->set_id(t.id);
        alt->set_logprob(t.logprob);
        alt->set_piece(tok->IdToPiece(t.id));
      }
    }
    {
      std::lock_guard<std::mutex> lock(state->mu);
      msg.set_request_id(state->request_id);
      if (out.finished) {
        msg.set_finish_reason(ToFinishReason(out.finish_reason));
        msg.mutable_usage()->set_prompt_tokens(out.usage.prompt_tokens);
        msg.mutable_usage()->set_completion_tokens(out.usage.completion_tokens);
        msg.mutable_usage()->set_cached_prompt_tokens(out.usage.cached_prompt_tokens);
        state->final_queued = true;
        if (out.finish_reason == "error") state->final_status = ToGrpcStatus(out.status);
        if (out.finish_reason == "abort") state->final_status = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
      }
      if (out.finish_reason != "error") state->queue.push_back(std::move(msg));
    }
    Pump(state);
  }

  // Starts the next write, or finishes the call once the final message is written.
  static void Pump(const std::shared_ptr<State>& state) {
    std::unique_lock<std::mutex> lock(state->mu);
    GenerateReactor* r = state->reactor;
    if (r == nullptr || state->writing || state->finish_called) return;
    if (state->broken || (state->queue.empty() && state->final_queued)) {
      state->finish_called = true;
      grpc::Status st = state->broken ? grpc::Status(grpc::StatusCode::CANCELLED, "client went away") : state->final_status;
      lock.unlock();
      r->Finish(st);
      return;
    }
    if (state->queue.empty()) return;
    state->current = std::move(state->queue.front());
    state->queue.pop_front();
    state->writing = true;
    lock.unlock();
    r->StartWrite(&state->current);
  }

  ServingContext* ctx_;
  std::shared_ptr<State> state_;
};

}  // namespace

grpc::ServerWriteReactor<v1::GenerateResponse>* InferenceService::Generate(grpc::CallbackServerContext*,
                                                                          const v1::GenerateRequest* request) {
  return new GenerateReactor(ctx_, request);
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const v1::TokenizeRequest* request, v1::TokenizeResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (!request->model().empty() && request->model() != ctx_->model_name()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "model '" + request->model() + "' is not served here"));
    return reactor;
  }
  const Tokenizer& tok = ctx_->tokenizer();
  for (int32_t id : tok.Encode(request->text(), request->add_special_tokens() && tok.add_bos())) {
    response->add_ids(id);
    response->add_pieces(tok.IdToPiece(id));
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::ListModels(grpc::CallbackServerContext* context,
                                                       const v1::ListModelsRequest*, v1::ListModelsResponse* response) {
  v1::ModelInfo* m = response->add_models();
  m->set_id(ctx_->model_name());
  m->set_kind("base");
  m->set_max_model_len(static_cast<uint32_t>(ctx_->engine().max_model_len()));
  for (const std::string& name : ctx_->AdapterNames()) {
    v1::ModelInfo* a = response->add_models();
    a->set_id(name);
    a->set_kind("lora");
    a->set_parent(ctx_->model_name());
    a->set_max_model_len(static_cast<uint32_t>(ctx_->engine().max_model_len()));
  }
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace tessera
