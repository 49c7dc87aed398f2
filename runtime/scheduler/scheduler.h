// Continuous-batching scheduler: picks, each step, which sequences run and how many tokens
// each feeds, under a token budget and a sequence cap, with chunked prefill and preemption
// by recompute. Pure bookkeeping over a KvCacheManager it owns; no model, no tensors.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/kv/kv_cache_manager.h"
#include "runtime/scheduler/scheduler_output.h"
#include "runtime/scheduler/sequence.h"

namespace tessera {

struct SchedulerOptions {
  int max_num_seqs = 256;             // sequences in one step (and running at once)
  int max_num_batched_tokens = 2048;  // tokens fed in one step
  int max_model_len = 2048;           // prompt + generated tokens of one sequence
  bool enable_chunked_prefill = true;
  // Most prompt tokens one sequence may feed in one step, so that one long prompt cannot
  // take the whole budget; 0 lets a chunk take what is left of the budget.
  int long_prefill_token_threshold = 0;
  KvCacheOptions kv;  // num_blocks, block_size, prefix caching

  absl::Status Validate() const;
};

struct SampledToken {
  uint64_t seq_id = 0;
  int32_t token_id = 0;
};

struct FinishedSequence {
  uint64_t id = 0;
  FinishReason reason = FinishReason::kNone;
  std::vector<int32_t> output_token_ids;  // generated tokens, a stop token included
};

struct SchedulerStats {
  int num_waiting = 0;  // includes preempted sequences waiting for recompute
  int num_running = 0;
  int64_t num_preemptions_total = 0;
  KvUsage kv;
};

// The step loop drives it as:
//   AddRequest(...)*; out = Schedule(); runner executes out; UpdateFromOutput(sampled);
// Each Schedule is answered by one UpdateFromOutput; if it never comes (the step failed),
// the next Schedule treats that step as not executed and schedules the same tokens again.
// Finish/Abort may be called between steps. Not thread-safe: one engine thread calls all.
//
// Ownership: the scheduler owns every sequence's tokens and its KV block table (through the
// KvCacheManager). A running sequence's table only grows, so the blocks a runner saw stay
// its own; they are released when the sequence shows up in preempted_ids (this step) or
// finished_ids (ended since the last step), and are not handed to another sequence before
// the next Schedule.
//
// Policy: running sequences go first (decodes, then continuing prefill chunks), then
// waiting ones in FCFS order, preempted sequences at the front. When blocks run out for a
// running sequence, the running sequence that arrived last is preempted by recompute
// (blocks freed, computed tokens reset, generated tokens kept); the oldest one therefore
// always progresses, and no request fails because the pool is momentarily full. No new
// sequence is admitted in a step that preempted.
class Scheduler {
 public:
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(SchedulerOptions options);

  // Queues a request. InvalidArgument for an empty prompt, max_new_tokens < 1, a negative
  // token id, a prompt with no room to generate under max_model_len, or a sequence that
  // could outgrow the whole KV pool; AlreadyExists for an id in use.
  absl::Status AddRequest(SequenceSpec spec);

  SchedulerOutput Schedule();

  // Applies the executed step: every scheduled sequence's computed tokens advance by what
  // it fed, and each sequence that sampled gets its token appended and stop conditions
  // checked. Ids of sequences that ended since Schedule are ignored. InvalidArgument (and
  // nothing applied) when a sampling sequence has no token, or a token names a sequence
  // that did not sample; FailedPrecondition without a pending step. Returns the sequences
  // that finished with this step; their ids also appear in the next Schedule's
  // finished_ids.
  absl::StatusOr<std::vector<FinishedSequence>> UpdateFromOutput(
      std::span<const SampledToken> sampled);

  // Ends a sequence for a reason found outside (a stop string): frees its blocks at once.
  absl::StatusOr<FinishedSequence> Finish(uint64_t id, FinishReason reason);
  // Finish with kAbort; the next Schedule no longer includes the sequence.
  absl::Status Abort(uint64_t id);

  // Null when unknown or already ended. Valid until the next non-const call.
  const Sequence* Find(uint64_t id) const;
  bool HasUnfinished() const { return !waiting_.empty() || !running_.empty(); }
  SchedulerStats Stats() const;
  const KvCacheManager& kv() const { return *kv_; }
  const SchedulerOptions& options() const { return options_; }

 private:
  Scheduler(SchedulerOptions options, std::unique_ptr<KvCacheManager> kv);

  // Tokens `s` may feed now out of `remaining` unfed ones; 0 when it must wait.
  int ChunkSize(int remaining, int budget) const;
  // Allocates for a running sequence, preempting the youngest running ones until it fits.
  // False when `s` itself had to be preempted.
  bool AllocateOrPreempt(Sequence* s, int num_new, int* budget, SchedulerOutput* out);
  void Preempt(Sequence* s, int* budget, SchedulerOutput* out);
  void InsertRunning(Sequence* s);
  FinishedSequence End(Sequence* s, FinishReason reason);

  SchedulerOptions options_;
  std::unique_ptr<KvCacheManager> kv_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Sequence>> seqs_;
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;  // ordered by arrival, oldest first
  int64_t next_arrival_ = 0;
  int64_t update_calls_ = 0;
  bool step_pending_ = false;
  std::vector<uint64_t> step_ids_;  // scheduled in the pending step, in output order
  std::vector<uint64_t> finished_since_schedule_;
  int64_t num_preemptions_ = 0;
};

}  // namespace tessera
