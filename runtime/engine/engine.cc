#include "runtime/engine/engine.h"

#include <algorithm>
#include <chrono>
#include <random>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"
#include "runtime/engine/stop_checker.h"
#include "runtime/tokenizer/detokenizer.h"

namespace tessera {

namespace {

// Penalties need the token history, top-N logprobs a sorted row, and drift statistics the
// whole distribution: those requests
// sample on the host from a copy of their own row.
bool NeedsHostSampling(const SamplingParams& p) {
  // Drift statistics (collect_stats) come from the device sampler (RowStats).
  return p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f ||
         p.logprobs > 0;
}

}  // namespace

// Per-request state kept on the engine thread.
struct Engine::Active {
  GenerationRequest request;
  std::shared_ptr<OutputCallback> callback;  // shared with outputs queued for delivery
  std::unique_ptr<SequenceSampler> sampler;
  std::unique_ptr<IncrementalDetokenizer> detok;
  std::unique_ptr<StopStringChecker> stops;
  std::vector<int32_t> stop_ids;  // EOS ids (unless ignore_eos) and the request's stop ids
  Usage usage;
  bool admitted = false;
  bool seen_first_schedule = false;
  LoraAdapterRef adapter_ref;  // keeps the adapter loaded until the request ends
  uint64_t device_seed = 0;       // keys the device sampler's draws (the request's seed if given)
};

absl::Status EngineOptions::Validate() const {
  if (block_size <= 0 || block_size > 256) return absl::InvalidArgumentError("--block-size must be in [1, 256]");
  if (num_kv_blocks < 0) return absl::InvalidArgumentError("--kv-blocks must not be negative");
  if (kv_cache_memory_bytes < 0) return absl::InvalidArgumentError("--kv-cache-memory must not be negative");
  if (!(gpu_memory_utilization > 0.0 && gpu_memory_utilization <= 1.0))
    return absl::InvalidArgumentError("--gpu-memory-utilization must be in (0, 1]");
  if (max_num_seqs <= 0) return absl::InvalidArgumentError("--max-num-seqs must be positive");
  if (max_num_batched_tokens <= 0) return absl::InvalidArgumentError("--max-num-batched-tokens must be positive");
  if (max_model_len < 0) return absl::InvalidArgumentError("--max-model-len must not be negative");
  if (kv_cache_dtype != "auto" && kv_cache_dtype != "fp8" && kv_cache_dtype != "fp8_e4m3")
    return absl::InvalidArgumentError(
        absl::StrCat("--kv-cache-dtype '", kv_cache_dtype, "': expected auto, fp8 or fp8_e4m3"));
  if (overlap_outputs != "auto" && overlap_outputs != "on" && overlap_outputs != "off")
    return absl::InvalidArgumentError(
        absl::StrCat("--overlap-outputs '", overlap_outputs, "': expected auto, on or off"));
  return absl::OkStatus();
}

DType KvCacheDTypeOf(const EngineOptions& options, const Backend& backend) {
  return options.kv_cache_dtype == "auto" ? backend.activation_dtype() : DType::kF8E4M3;
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(LlamaModel* model, const Tokenizer* tokenizer,
                                                       const EngineOptions& options, LoraRegistry* lora) {
  RETURN_IF_ERROR(options.Validate());
  if (lora != nullptr) {
    const ModelConfig& a = lora->model_config();
    const ModelConfig& m = model->config();
    if (a.num_hidden_layers != m.num_hidden_layers || a.hidden_size != m.hidden_size ||
        a.intermediate_size != m.intermediate_size || a.num_attention_heads != m.num_attention_heads ||
        a.num_key_value_heads != m.num_key_value_heads || a.head_dim != m.head_dim)
      return absl::InvalidArgumentError("the LoRA registry was created for a model of another shape");
    model->SetLoraTables(&lora->tables());
  }
  auto e = std::unique_ptr<Engine>(new Engine());
  e->lora_ = lora;
  e->model_ = model;
  e->tokenizer_ = tokenizer;
  e->options_ = options;
  e->overlap_outputs_ = options.overlap_outputs == "on" ||
                        (options.overlap_outputs == "auto" && model->backend().kind() != DeviceKind::kCpu);
  const ModelConfig& c = model->config();
  e->max_model_len_ = options.max_model_len > 0 ? options.max_model_len : static_cast<int32_t>(c.max_position_embeddings);
  Backend& backend = model->backend();
  const bool use_graphs = !options.enforce_eager && backend.SupportsGraphs() && !model->rope_depends_on_batch();
  if (use_graphs) {
    // Graphs hold workspace pointers: the largest step's workspace is taken now, before
    // the KV budget is sized from the memory left.
    RETURN_IF_ERROR(model->Reserve(std::max<int64_t>(options.max_num_batched_tokens, 256),
                                   std::max<int64_t>(options.max_num_seqs, 256), e->max_model_len_));
  }
  const DType kv_dtype = KvCacheDTypeOf(options, backend);
  RETURN_IF_ERROR(backend.CheckKvCacheDType(kv_dtype, static_cast<int32_t>(c.head_dim)));
  int64_t blocks = options.num_kv_blocks;
  if (blocks == 0) {
    int64_t budget = options.kv_cache_memory_bytes;
    if (budget == 0) {
      const double free_bytes = static_cast<double>(backend.FreeMemoryBytes());
      budget = backend.kind() == DeviceKind::kCpu
                   ? static_cast<int64_t>(std::min(512.0 * (1 << 20), free_bytes / 4))
                   : static_cast<int64_t>(free_bytes * options.gpu_memory_utilization);
    }
    ASSIGN_OR_RETURN(int n, NumBlocksForBudget(budget, options.block_size, static_cast<int>(c.num_hidden_layers),
                                               static_cast<int>(c.num_key_value_heads),
                                               static_cast<int>(PagedKvStorage::BytesPerBlock(c, 1, kv_dtype) /
                                                                (2 * c.num_hidden_layers * c.num_key_value_heads))));
    blocks = n;
  }
  e->num_kv_blocks_ = static_cast<int32_t>(blocks);
  SchedulerOptions so;
  so.max_num_seqs = options.max_num_seqs;
  so.max_num_batched_tokens = options.max_num_batched_tokens;
  so.max_model_len = e->max_model_len_;
  so.kv.num_blocks = e->num_kv_blocks_;
  so.kv.block_size = options.block_size;
  so.kv.enable_prefix_caching = options.enable_prefix_caching;
  ASSIGN_OR_RETURN(e->scheduler_, Scheduler::Create(so));
  ASSIGN_OR_RETURN(e->kv_, PagedKvStorage::Create(backend, c, e->num_kv_blocks_, options.block_size, kv_dtype));
  if (use_graphs) {
    DecodeGraphOptions go;
    go.buckets.clear();
    for (int32_t b : DecodeGraphOptions().buckets) {
      go.buckets.push_back(b);
      if (b >= options.max_num_seqs) break;  // the smallest bucket that holds every sequence
    }
    go.max_model_len = e->max_model_len_;
    go.block_size = options.block_size;
    go.reserve_tokens = std::max<int64_t>(options.max_num_batched_tokens, 256);
    go.reserve_logits = std::max<int64_t>(options.max_num_seqs, 256);
    ASSIGN_OR_RETURN(e->graphs_, DecodeGraphRunner::Create(model, e->kv_.get(), go));
  }
  e->PublishStats(0.0);
  if (options.output_thread) e->pump_ = std::make_unique<OutputPump>([raw = e.get()](int n) { raw->OnDelivered(n); });
  e->thread_ = std::thread([raw = e.get()] { raw->Loop(); });
  return e;
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  pump_.reset();  // delivers the final outputs of the aborted requests
}

absl::StatusOr<uint64_t> Engine::Submit(GenerationRequest request, OutputCallback callback) {
  RETURN_IF_ERROR(request.sampling.Validate());
  const ModelConfig& c = model_->config();
  if (request.prompt_ids.empty()) return absl::InvalidArgumentError("the prompt is empty");
  for (int32_t id : request.prompt_ids) {
    if (id < 0 || id >= c.vocab_size)
      return absl::InvalidArgumentError(absl::StrCat("prompt token id ", id, " is outside the vocabulary of ", c.vocab_size));
  }
  if (request.max_tokens < 1) return absl::InvalidArgumentError("max_tokens must be at least 1");
  const int64_t prompt_len = static_cast<int64_t>(request.prompt_ids.size());
  if (prompt_len >= max_model_len_)
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", prompt_len, " tokens; the context length is ",
                                                   max_model_len_, " and at least one token must be generated"));
  const int64_t longest = std::min<int64_t>(prompt_len + request.max_tokens, max_model_len_);
  const int64_t blocks_needed = (longest + options_.block_size - 1) / options_.block_size;
  if (blocks_needed > num_kv_blocks_)
    return absl::InvalidArgumentError(absl::StrCat("the request needs up to ", blocks_needed,
                                                     " KV blocks; the whole cache has ", num_kv_blocks_));
  // With a registry every adapter name or id must be loaded; without one, only the
  // adapter_id remains, as a prefix-cache salt.
  LoraAdapterRef adapter_ref;
  if (lora_ == nullptr && !request.adapter.empty()) {
    return absl::NotFoundError(absl::StrCat("LoRA adapter '", request.adapter, "' is not loaded (no adapters are enabled)"));
  }
  if (lora_ != nullptr && (!request.adapter.empty() || request.adapter_id != 0)) {
    ASSIGN_OR_RETURN(request.adapter_id, lora_->Retain(request.adapter, request.adapter_id));
    adapter_ref = LoraAdapterRef(lora_, request.adapter_id);
  }
  auto a = std::make_unique<Active>();
  a->adapter_ref = std::move(adapter_ref);
  if (request.sampling.seed.has_value()) {
    a->device_seed = *request.sampling.seed;
  } else {
    std::random_device rd;
    a->device_seed = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }
  a->sampler = std::make_unique<SequenceSampler>(request.sampling, request.prompt_ids);
  if (tokenizer_) a->detok = std::make_unique<IncrementalDetokenizer>(tokenizer_, request.prompt_ids);
  a->stops = std::make_unique<StopStringChecker>(request.stop_strings);
  a->usage.prompt_tokens = static_cast<int32_t>(prompt_len);
  a->request = std::move(request);
  a->callback = std::make_shared<OutputCallback>(std::move(callback));
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return absl::UnavailableError("the engine is shutting down");
    id = next_id_++;
    incoming_.emplace_back(id, std::move(a));
    ++in_flight_;
    stats_.num_in_flight = in_flight_;
  }
  wake_.notify_one();
  return id;
}

void Engine::Cancel(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancels_.push_back(id);
  }
  wake_.notify_one();
}

void Engine::Drain() {
  std::unique_lock<std::mutex> lock(mu_);
  // stats_ is republished after each loop iteration, so once it shows nothing in flight
  // the KV usage it reports is final too.
  drained_.wait(lock, [this] { return in_flight_ == 0 && stats_.num_in_flight == 0; });
}

EngineStats Engine::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Engine::PublishStats(double step_seconds) {
  SchedulerStats s = scheduler_->Stats();
  std::lock_guard<std::mutex> lock(mu_);
  stats_.num_waiting = s.num_waiting + static_cast<int>(incoming_.size());
  stats_.num_running = s.num_running;
  stats_.num_preemptions_total = s.num_preemptions_total;
  stats_.kv = s.kv;
  stats_.num_in_flight = in_flight_;
  if (step_seconds > 0) {
    ++stats_.steps_total;
    stats_.step_seconds_total += step_seconds;
  }
  if (in_flight_ == 0) drained_.notify_all();
}

void Engine::Emit(Active& a, RequestOutput out) {
  if (pump_) {
    pending_outputs_.push_back({a.callback, std::move(out)});
    return;
  }
  const bool finished = out.finished;
  if (*a.callback) (*a.callback)(std::move(out));
  if (finished) {
    std::lock_guard<std::mutex> lock(mu_);
    --in_flight_;  // stats_ follows at the step's PublishStats, with the final KV usage
  }
}

void Engine::FlushOutputs() {
  if (pump_ && !pending_outputs_.empty()) {
    pump_->Push(std::move(pending_outputs_));
    pending_outputs_.clear();
  }
}

void Engine::OnDelivered(int finished) {
  if (finished == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  in_flight_ -= finished;
  // The engine thread published this step's KV usage before it handed the outputs over.
  stats_.num_in_flight = in_flight_;
  if (in_flight_ == 0) drained_.notify_all();
}

void Engine::FinishRequest(uint64_t id, const std::string& reason, absl::Status status) {
  auto it = active_.find(id);
  if (it == active_.end()) return;
  Active& a = *it->second;
  RequestOutput out;
  out.id = id;
  if (reason != "error" && reason != "abort") {
    if (a.detok) out.text = a.stops->Add(a.detok->Flush()).emit + a.stops->Flush();
  }
  out.finished = true;
  out.finish_reason = reason;
  out.usage = a.usage;
  out.status = std::move(status);
  Emit(a, std::move(out));
  active_.erase(it);
}

void Engine::Admit(std::vector<std::pair<uint64_t, std::unique_ptr<Active>>>& incoming) {
  const ModelConfig& c = model_->config();
  for (auto& [id, a] : incoming) {
    SequenceSpec spec;
    spec.id = id;
    spec.prompt_token_ids = a->request.prompt_ids;
    spec.max_new_tokens = a->request.max_tokens;
    spec.ignore_eos = a->request.ignore_eos;
    spec.eos_token_id = c.eos_token_ids.empty() ? -1 : c.eos_token_ids[0];
    spec.stop_token_ids = a->request.stop_token_ids;
    if (!a->request.ignore_eos) {
      for (size_t i = 1; i < c.eos_token_ids.size(); ++i) spec.stop_token_ids.push_back(c.eos_token_ids[i]);
    }
    // Prefix-cache salt: the adapter's identity (the model is fixed per engine).
    spec.cache_salt = a->request.adapter_id;
    a->stop_ids = spec.stop_token_ids;
    if (!a->request.ignore_eos && spec.eos_token_id >= 0) a->stop_ids.push_back(spec.eos_token_id);
    absl::Status st = scheduler_->AddRequest(std::move(spec));
    active_[id] = std::move(a);
    if (!st.ok()) FinishRequest(id, "error", st);
  }
  incoming.clear();
}

void Engine::Loop() {
  for (;;) {
    std::vector<std::pair<uint64_t, std::unique_ptr<Active>>> incoming;
    std::vector<uint64_t> cancels;
    bool stopping;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [this] {
        return stop_ || !incoming_.empty() || !cancels_.empty() || scheduler_->HasUnfinished() || owed_.has_value();
      });
      incoming.swap(incoming_);
      cancels.swap(cancels_);
      stopping = stop_;
    }
    Admit(incoming);
    // A request's outputs stay in order: what its last step owes goes out before an abort.
    if (!cancels.empty() || stopping) EmitOwedOutputs();
    for (uint64_t id : cancels) {
      if (scheduler_->Find(id) != nullptr) scheduler_->Abort(id).IgnoreError();
      FinishRequest(id, "abort");
    }
    if (stopping) {
      std::vector<uint64_t> ids;
      for (const auto& [id, _] : active_) ids.push_back(id);
      for (uint64_t id : ids) {
        if (scheduler_->Find(id) != nullptr) scheduler_->Abort(id).IgnoreError();
        FinishRequest(id, "abort", absl::UnavailableError("the engine shut down"));
      }
      PublishStats(0.0);
      FlushOutputs();
      return;
    }
    if (scheduler_->HasUnfinished()) {
      Step();
    } else {
      EmitOwedOutputs();
      PublishStats(0.0);
    }
    FlushOutputs();
  }
}

void Engine::Step() {
  const auto t0 = std::chrono::steady_clock::now();
  owed_seconds_ = 0.0;
  launch_seconds_ = 0.0;
  step_timed_ = false;
  SchedulerOutput out = scheduler_->Schedule();
  if (out.empty()) {
    scheduler_->UpdateFromOutput({}).IgnoreError();  // every Schedule is answered
    EmitOwedOutputs();
    PublishStats(0.0);
    return;
  }
  for (const ScheduledSequence& s : out.sequences) {
    auto it = active_.find(s.id);
    if (it != active_.end() && !it->second->seen_first_schedule) {
      it->second->seen_first_schedule = true;
      it->second->usage.cached_prompt_tokens = s.start_position;
    }
  }
  std::vector<uint64_t> sample_ids;
  absl::StatusOr<std::vector<SampleResult>> sampled_results = std::vector<SampleResult>();
  const auto forward_start = std::chrono::steady_clock::now();
  const double schedule_secs = std::chrono::duration<double>(forward_start - t0).count();
  // The previous step's outputs are made while the first forward runs.
  const bool overlapped = owed_.has_value();
  const std::function<void()> emit_owed = [this] { EmitOwedOutputs(); };
  bool all_graphs = true;
  for (const auto& group : GroupByAdapterSlots(out)) {
    auto part = RunGroup(out, group, &sample_ids, emit_owed);
    all_graphs = all_graphs && group_replayed_graph_;
    if (!part.ok()) {
      sampled_results = part.status();
      break;
    }
    sampled_results->insert(sampled_results->end(), part->begin(), part->end());
  }
  EmitOwedOutputs();  // where no forward was launched
  std::optional<double> device_secs;
  if (step_timed_) device_secs = model_->backend().DeviceStepSeconds();
  if (!sampled_results.ok()) {
    // A failed step fails the requests in it; the engine keeps serving the rest.
    for (const ScheduledSequence& s : out.sequences) {
      scheduler_->Abort(s.id).IgnoreError();
      FinishRequest(s.id, "error", sampled_results.status());
    }
    PublishStats(0.0);
    return;
  }
  const auto forward_end = std::chrono::steady_clock::now();
  const double forward_secs = std::chrono::duration<double>(forward_end - forward_start).count();
  OwedOutputs owed;
  owed.results = std::move(*sampled_results);
  for (size_t i = 0; i < sample_ids.size(); ++i) owed.sampled.push_back({sample_ids[i], owed.results[i].token});
  auto finished = scheduler_->UpdateFromOutput(owed.sampled);
  if (!finished.ok()) {
    for (const ScheduledSequence& s : out.sequences) {
      scheduler_->Abort(s.id).IgnoreError();
      FinishRequest(s.id, "error", finished.status());
    }
    PublishStats(0.0);
    return;
  }
  const auto update_end = std::chrono::steady_clock::now();
  for (const FinishedSequence& f : *finished) owed.ended[f.id] = f.reason;
  owed_ = std::move(owed);
  const double overlapped_secs = owed_seconds_;
  if (!overlap_outputs_) EmitOwedOutputs();
  const auto end = std::chrono::steady_clock::now();
  const double secs = std::chrono::duration<double>(end - t0).count();
  PublishStats(secs);
  if (step_observer_) {
    StepInfo info;
    info.seconds = secs;
    info.forward_seconds = forward_secs;
    info.schedule_seconds = schedule_secs;
    info.update_seconds = std::chrono::duration<double>(update_end - forward_end).count();
    info.outputs_seconds = overlap_outputs_ ? overlapped_secs : owed_seconds_;
    info.launch_seconds = launch_seconds_;
    info.device_seconds = device_secs.value_or(-1.0);
    info.batched_tokens = out.num_batched_tokens;
    info.num_seqs = static_cast<int>(out.sequences.size());
    info.graph = all_graphs;
    info.outputs_overlapped = overlapped;
    step_observer_(info);
  }
}

void Engine::EmitOwedOutputs() {
  if (!owed_) return;
  const auto t0 = std::chrono::steady_clock::now();
  OwedOutputs owed = std::move(*owed_);
  owed_.reset();
  const std::vector<SampledToken>& sampled = owed.sampled;
  std::unordered_map<uint64_t, FinishReason>& ended = owed.ended;
  int finals = 0;
  for (size_t i = 0; i < sampled.size(); ++i) {
    const uint64_t id = sampled[i].seq_id;
    auto it = active_.find(id);
    if (it == active_.end()) continue;
    Active& a = *it->second;
    const int32_t token = sampled[i].token_id;
    a.usage.completion_tokens++;
    RequestOutput o;
    o.id = id;
    o.token_ids.push_back(token);
    if (a.request.sampling.logprobs >= 0 || a.request.sampling.collect_stats) o.logprobs.push_back(owed.results[i]);
    bool stopped_by_string = false;
    const bool is_stop_token = std::find(a.stop_ids.begin(), a.stop_ids.end(), token) != a.stop_ids.end();
    if (a.detok && !is_stop_token) {
      auto r = a.stops->Add(a.detok->Append(token));
      o.text = std::move(r.emit);
      stopped_by_string = r.stopped;
    }
    auto e = ended.find(id);
    if (stopped_by_string && e == ended.end()) {
      // With outputs overlapped the sequence is in the step now running: the scheduler
      // ignores the token it samples there, and so does this loop (it is no longer active).
      scheduler_->Finish(id, FinishReason::kStop).IgnoreError();
      ended[id] = FinishReason::kStop;
      e = ended.find(id);
    }
    if (e != ended.end()) {
      // Final output: this token plus whatever text was held back.
      if (!stopped_by_string && a.detok) {
        o.text += a.stops->Add(a.detok->Flush()).emit;
        o.text += a.stops->Flush();
      }
      o.finished = true;
      o.finish_reason = std::string(FinishReasonName(e->second));
      o.usage = a.usage;
      Emit(a, std::move(o));
      active_.erase(it);
      ++finals;
    } else {
      Emit(a, std::move(o));
    }
  }
  // Handed over at once (with outputs overlapped, the forward is still running): waiting for
  // the end of the loop iteration would hold every token back by a whole step. Stats go
  // first, so that a request counted as delivered finds its blocks already counted free.
  if (finals > 0) PublishStats(0.0);
  FlushOutputs();
  owed_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

uint64_t Engine::AdapterOf(uint64_t seq_id) const {
  if (lora_ == nullptr) return 0;  // adapter_id is only a cache salt then
  auto it = active_.find(seq_id);
  return it == active_.end() ? 0 : it->second->request.adapter_id;
}

std::vector<std::vector<const ScheduledSequence*>> Engine::GroupByAdapterSlots(const SchedulerOutput& out) const {
  std::vector<std::vector<const ScheduledSequence*>> groups(1);
  if (lora_ == nullptr) {
    for (const ScheduledSequence& s : out.sequences) groups[0].push_back(&s);
    return groups;
  }
  // First fit: usually every adapter fits and this is one group; with more distinct
  // adapters than slots the step runs in several forwards (each reusing slots).
  const size_t slots = static_cast<size_t>(lora_->num_slots());
  std::vector<std::vector<uint64_t>> adapters(1);
  for (const ScheduledSequence& s : out.sequences) {
    const uint64_t id = AdapterOf(s.id);
    size_t g = 0;
    for (; g < groups.size(); ++g) {
      auto& ids = adapters[g];
      if (id == 0 || std::find(ids.begin(), ids.end(), id) != ids.end()) break;
      if (ids.size() < slots) {
        ids.push_back(id);
        break;
      }
    }
    if (g == groups.size()) {
      groups.emplace_back();
      adapters.push_back({id});
    }
    groups[g].push_back(&s);
  }
  return groups;
}

absl::StatusOr<std::vector<SampleResult>> Engine::RunGroup(const SchedulerOutput& out,
                                                    const std::vector<const ScheduledSequence*>& group,
                                                    std::vector<uint64_t>* sample_ids,
                                                    const std::function<void()>& after_launch) {
  std::vector<uint64_t> adapters;  // distinct, non-base
  std::vector<uint64_t> seq_adapter;
  for (const ScheduledSequence* s : group) {
    seq_adapter.push_back(AdapterOf(s->id));
    if (seq_adapter.back() != 0 && std::find(adapters.begin(), adapters.end(), seq_adapter.back()) == adapters.end())
      adapters.push_back(seq_adapter.back());
  }
  const auto launch_start = std::chrono::steady_clock::now();
  std::vector<int32_t> slots;
  if (!adapters.empty()) {
    ASSIGN_OR_RETURN(slots, lora_->AcquireSlots(adapters));
  }
  const int32_t bs = options_.block_size;
  BatchLayout layout;
  layout.block_size = bs;
  int32_t max_blocks = 1;
  for (const ScheduledSequence* s : group) max_blocks = std::max(max_blocks, s->num_blocks);
  layout.max_blocks_per_seq = max_blocks;
  layout.query_start.push_back(0);
  std::vector<uint64_t> sampled;
  for (size_t i = 0; i < group.size(); ++i) {
    const ScheduledSequence& s = *group[i];
    auto tokens = out.Tokens(s);
    auto table = out.BlockTable(s);
    int32_t slot = -1;
    if (seq_adapter[i] != 0) slot = slots[std::find(adapters.begin(), adapters.end(), seq_adapter[i]) - adapters.begin()];
    for (int t = 0; t < s.num_tokens; ++t) {
      const int32_t pos = s.start_position + t;
      layout.token_ids.push_back(tokens[t]);
      layout.positions.push_back(pos);
      layout.slot_mapping.push_back(table[pos / bs] * bs + pos % bs);
      if (!adapters.empty()) layout.lora_slots.push_back(slot);
    }
    layout.query_start.push_back(layout.query_start.back() + s.num_tokens);
    layout.context_lens.push_back(s.start_position + s.num_tokens);
    for (int32_t b = 0; b < max_blocks; ++b) layout.block_tables.push_back(b < s.num_blocks ? table[b] : 0);
    if (s.sample) {
      layout.logits_rows.push_back(layout.query_start.back() - 1);
      sampled.push_back(s.id);
    }
  }
  // Decode-only steps (with or without adapters) replay a captured graph; the rest run eagerly.
  group_replayed_graph_ = graphs_ && graphs_->Accepts(layout);
  if (!step_timed_) {
    model_->backend().MarkStepStart();
    step_timed_ = true;
  }
  auto logits = group_replayed_graph_ ? graphs_->Run(layout) : model_->ForwardLogits(layout, *kv_);
  if (!adapters.empty()) lora_->ReleaseSlots(adapters);  // later uploads queue behind this forward
  launch_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - launch_start).count();
  if (!logits.ok()) return logits.status();
  if (after_launch) after_launch();
  // Sample before the next group's forward reuses the logits buffer.
  ASSIGN_OR_RETURN(std::vector<SampleResult> results, SampleStep(*logits, sampled));
  sample_ids->insert(sample_ids->end(), sampled.begin(), sampled.end());
  return results;
}

absl::StatusOr<std::vector<SampleResult>> Engine::SampleStep(const TensorView& logits,
                                                              const std::vector<uint64_t>& ids) {
  Backend& b = model_->backend();
  const int64_t vocab = logits.cols;
  std::vector<SampleResult> results(ids.size());
  // A request that ended while this forward ran (a stop string found in overlapped
  // outputs) is no longer active: its row is sampled greedily and its token dropped.
  std::vector<Active*> active(ids.size(), nullptr);
  for (size_t i = 0; i < ids.size(); ++i) {
    auto it = active_.find(ids[i]);
    if (it != active_.end()) active[i] = it->second.get();
  }
  std::vector<size_t> host_rows;
  if (b.kind() == DeviceKind::kCpu) {
    // The logits are already in host memory: the host sampler reads them in place.
    for (size_t i = 0; i < ids.size(); ++i) host_rows.push_back(i);
  } else {
    std::vector<SamplingRow> rows(ids.size());
    bool want_stats = false;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (active[i] == nullptr) {
        rows[i].temperature = 0.0f;
        continue;
      }
      const Active& a = *active[i];
      const SamplingParams& p = a.request.sampling;
      if (NeedsHostSampling(p)) {
        host_rows.push_back(i);  // its row is sampled greedily here and redone below
        continue;
      }
      rows[i].temperature = p.temperature;
      rows[i].top_k = p.top_k;
      rows[i].top_p = p.top_p;
      rows[i].min_p = p.min_p;
      rows[i].seed = a.device_seed;
      rows[i].step = static_cast<uint64_t>(a.usage.completion_tokens);
      want_stats = want_stats || p.collect_stats;
    }
    std::vector<int32_t> tokens;
    std::vector<float> logprobs;
    std::vector<RowStats> stats;
    RETURN_IF_ERROR(b.SampleTokens(logits, rows, &tokens, &logprobs, want_stats ? &stats : nullptr));
    size_t next_host = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (next_host < host_rows.size() && host_rows[next_host] == i) {
        ++next_host;
        continue;
      }
      results[i].token = tokens[i];
      results[i].logprob = logprobs[i];
      if (want_stats) {
        results[i].entropy = stats[i].entropy;
        results[i].top1_prob = stats[i].top1_prob;
      }
      if (active[i] != nullptr) active[i]->sampler->Record(tokens[i]);  // the history penalties would read
    }
  }
  std::vector<float> row;
  for (size_t i : host_rows) {
    if (active[i] == nullptr) continue;
    const float* src = static_cast<const float*>(logits.data) + i * vocab;
    if (b.kind() != DeviceKind::kCpu) {
      row.resize(vocab);
      RETURN_IF_ERROR(b.CopyToHost(row.data(), src, vocab * sizeof(float)));
      src = row.data();
    }
    results[i] = active[i]->sampler->Sample(src, static_cast<int32_t>(vocab));
  }
  return results;
}

}  // namespace tessera
