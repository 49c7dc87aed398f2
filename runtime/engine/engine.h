// The engine: owns the step loop on its own thread. Requests come in through Submit,
// each step the scheduler picks the batch, the model runs it, tokens are sampled and
// detokenized, and outputs stream back through each request's callback.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/engine/output_pump.h"
#include "runtime/engine/request.h"
#include "runtime/lora/lora_registry.h"
#include "runtime/model/decode_graph_runner.h"
#include "runtime/model/llama_model.h"
#include "runtime/scheduler/scheduler.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tessera {

struct EngineOptions {
  int32_t block_size = 16;
  // KV pool size: num_kv_blocks if > 0, else kv_cache_memory_bytes if > 0, else on a GPU
  // gpu_memory_utilization of the memory still free after the weights, and on the CPU
  // min(512 MiB, a quarter of free memory).
  int64_t num_kv_blocks = 0;
  int64_t kv_cache_memory_bytes = 0;
  double gpu_memory_utilization = 0.9;
  // auto: the KV cache in the activation dtype; fp8 (or fp8_e4m3): FP8 E4M3 with a scale per
  // token and kv head, half the bytes of bf16 (twice the tokens, half the attention reads).
  std::string kv_cache_dtype = "auto";
  int32_t max_num_seqs = 256;
  int32_t max_num_batched_tokens = 2048;
  int32_t max_model_len = 0;  // 0: the model's max_position_embeddings
  bool enable_prefix_caching = true;
  // Decode steps replay captured device graphs unless this is set (or the backend has none).
  bool enforce_eager = false;
  // Request callbacks run on an output thread of the engine's own, a step's outputs handed
  // over at once; off, they run on the engine thread between steps.
  bool output_thread = true;
  // Turning a step's sampled tokens into outputs (detokenizing, stop strings, hand-over)
  // while the device runs the next step's forward: auto where the backend runs
  // asynchronously (a GPU), on, or off (each step's outputs before the next is scheduled).
  // A stop string found this way ends its sequence one step later; the token that sequence
  // sampled meanwhile is dropped, so the outputs are the same either way.
  std::string overlap_outputs = "auto";

  absl::Status Validate() const;
};

// The KV cache dtype that options.kv_cache_dtype names on `backend`.
DType KvCacheDTypeOf(const EngineOptions& options, const Backend& backend);

// One engine step as seen by a step observer.
struct StepInfo {
  double seconds = 0.0;          // the whole step: scheduling, forward, sampling, outputs
  double forward_seconds = 0.0;  // forwards and sampling, which wait for the device
  // Host phases around the forward: choosing the batch, recording the sampled tokens in the
  // scheduler, and turning them into outputs (detokenizing, stop strings, hand-over).
  double schedule_seconds = 0.0;
  double update_seconds = 0.0;
  double outputs_seconds = 0.0;
  // Inside forward_seconds: building the batches and enqueueing their forwards (host), and
  // the device time from the first forward's first command to sampling's end (negative
  // where the backend does not time steps). A launch time near the device time, or a device
  // time well below forward_seconds, says the device waits for the host.
  double launch_seconds = 0.0;
  double device_seconds = -1.0;
  int batched_tokens = 0;
  int num_seqs = 0;
  bool graph = false;  // every forward of the step replayed a captured decode graph
  // The previous step's outputs were made while this step's forward ran (their time is
  // part of forward_seconds then, and of the host time otherwise).
  bool outputs_overlapped = false;
};

struct EngineStats {
  int num_waiting = 0;
  int num_running = 0;
  int num_in_flight = 0;  // submitted and not yet finished
  int64_t num_preemptions_total = 0;
  int64_t steps_total = 0;
  double step_seconds_total = 0.0;
  KvUsage kv;
};

class Engine {
 public:
  // `lora` (optional, must outlive the engine) serves requests that name an adapter (or
  // give a loaded adapter's id); the engine attaches its slot tables to the model. Without
  // it, requests naming an adapter are refused and adapter_id only salts the prefix cache.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(LlamaModel* model, const Tokenizer* tokenizer,
                                                        const EngineOptions& options, LoraRegistry* lora = nullptr);
  ~Engine();  // aborts what is still running and joins the loop

  // Validates and queues a request. Errors that can be known at once (bad sampling
  // parameters, a prompt that can never fit, an adapter that is not loaded: NotFound) come back here; later ones arrive as a final
  // output with finish_reason "error". The callback runs on the engine's output thread (or
  // on the engine thread without one), a request's outputs in order.
  absl::StatusOr<uint64_t> Submit(GenerationRequest request, OutputCallback callback);
  // Stops the request at the next step boundary; its final output has reason "abort".
  void Cancel(uint64_t id);
  // Blocks until every submitted request has finished.
  void Drain();
  EngineStats Stats() const;

  const EngineOptions& options() const { return options_; }
  int32_t max_model_len() const { return max_model_len_; }
  int32_t num_kv_blocks() const { return num_kv_blocks_; }
  LlamaModel& model() { return *model_; }
  const Tokenizer* tokenizer() const { return tokenizer_; }

  // Batch-size buckets whose decode graph has been captured so far.
  int num_decode_graphs() const { return graphs_ ? graphs_->num_graphs() : 0; }

  // Observes every step that ran a forward; set before the first Submit.
  void SetStepObserver(std::function<void(const StepInfo&)> observer) { step_observer_ = std::move(observer); }

 private:
  struct Active;
  Engine() = default;
  void Loop();
  void Step();
  // Turns the sampled tokens of the last step whose outputs are still owed into outputs
  // (no-op when none are owed).
  void EmitOwedOutputs();
  void Admit(std::vector<std::pair<uint64_t, std::unique_ptr<Active>>>& incoming);
  // Queues (or, without an output thread, delivers) one output; a final output counts the
  // request as no longer in flight once delivered.
  void Emit(Active& a, RequestOutput out);
  void FlushOutputs();
  void OnDelivered(int finished);
  void FinishRequest(uint64_t id, const std::string& reason, absl::Status status = absl::OkStatus());
  void PublishStats(double step_seconds);
  // Splits a step's sequences into groups whose adapters fit the LoRA slots together.
  std::vector<std::vector<const ScheduledSequence*>> GroupByAdapterSlots(const SchedulerOutput& out) const;
  // Runs one group through the model and samples its rows; appends the ids of the
  // sequences it sampled (results in the same order).
  // `after_launch` (optional) runs once the group's forward is queued on the device,
  // before the host waits for its sampled tokens.
  absl::StatusOr<std::vector<SampleResult>> RunGroup(const SchedulerOutput& out,
                                              const std::vector<const ScheduledSequence*>& group,
                                              std::vector<uint64_t>* sample_ids,
                                              const std::function<void()>& after_launch);
  // The adapter whose slot a sequence needs; 0 for the base model.
  uint64_t AdapterOf(uint64_t seq_id) const;
  // Samples one token for each sequence of `ids` from the step's device logits (row i
  // for ids[i]): on the device where the request allows, on the host otherwise.
  absl::StatusOr<std::vector<SampleResult>> SampleStep(const TensorView& logits, const std::vector<uint64_t>& ids);

  LlamaModel* model_ = nullptr;
  const Tokenizer* tokenizer_ = nullptr;
  EngineOptions options_;
  int32_t max_model_len_ = 0;
  int32_t num_kv_blocks_ = 0;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<PagedKvStorage> kv_;
  std::unique_ptr<DecodeGraphRunner> graphs_;  // null: every step eager
  std::function<void(const StepInfo&)> step_observer_;
  bool group_replayed_graph_ = false;  // set by RunGroup
  bool step_timed_ = false;            // the device's step timer runs (the step's first forward began)
  double launch_seconds_ = 0.0;        // the current step's batch building and forward enqueueing
  LoraRegistry* lora_ = nullptr;

  // A step's sampled tokens whose outputs are not made yet, with the sequences that step
  // ended (in the scheduler already).
  struct OwedOutputs {
    std::vector<SampledToken> sampled;
    std::vector<SampleResult> results;
    std::unordered_map<uint64_t, FinishReason> ended;
  };

  // Engine-thread state.
  std::unordered_map<uint64_t, std::unique_ptr<Active>> active_;
  bool overlap_outputs_ = false;       // resolved from options_.overlap_outputs
  std::optional<OwedOutputs> owed_;
  double owed_seconds_ = 0.0;          // time spent making owed outputs in the current step
  std::vector<OutputPump::Item> pending_outputs_;  // this loop iteration's, for the pump

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable drained_;
  std::vector<std::pair<uint64_t, std::unique_ptr<Active>>> incoming_;
  std::vector<uint64_t> cancels_;
  uint64_t next_id_ = 1;
  int in_flight_ = 0;
  bool stop_ = false;
  EngineStats stats_;
  std::thread thread_;
  std::unique_ptr<OutputPump> pump_;  // null: callbacks run on the engine thread
};

}  // namespace tessera
