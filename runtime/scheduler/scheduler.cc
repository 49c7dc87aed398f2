// Scheduler: admission, per-step token budget, chunked prefill, preemption, stop handling.
#include "runtime/scheduler/scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tessera {

absl::Status SchedulerOptions::Validate() const {
  if (max_num_seqs < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_num_seqs must be >= 1, got ", max_num_seqs));
  }
  if (max_num_batched_tokens < max_num_seqs) {
    // Otherwise a full set of decodes could leave a running prefill no token, forever.
    return absl::InvalidArgumentError(
        absl::StrCat("max_num_batched_tokens (", max_num_batched_tokens,
                     ") must be >= max_num_seqs (", max_num_seqs, ")"));
  }
  if (max_model_len < 2) {
    return absl::InvalidArgumentError(absl::StrCat("max_model_len must be >= 2, got ", max_model_len));
  }
  if (!enable_chunked_prefill && max_num_batched_tokens < max_model_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "without chunked prefill max_num_batched_tokens (", max_num_batched_tokens,
        ") must be >= max_model_len (", max_model_len, ") so every prompt fits one step"));
  }
  if (long_prefill_token_threshold < 0) {
    return absl::InvalidArgumentError("long_prefill_token_threshold must be >= 0");
  }
  return kv.Validate();
}

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(SchedulerOptions options) {
  if (absl::Status st = options.Validate(); !st.ok()) return st;
  auto kv = KvCacheManager::Create(options.kv);
  if (!kv.ok()) return kv.status();
  return std::unique_ptr<Scheduler>(new Scheduler(std::move(options), std::move(kv).value()));
}

Scheduler::Scheduler(SchedulerOptions options, std::unique_ptr<KvCacheManager> kv)
    : options_(std::move(options)), kv_(std::move(kv)) {}

absl::Status Scheduler::AddRequest(SequenceSpec spec) {
  const size_t prompt_len = spec.prompt_token_ids.size();
  if (seqs_.contains(spec.id)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", spec.id, " already exists"));
  }
  if (prompt_len == 0) {
    return absl::InvalidArgumentError(absl::StrCat("sequence ", spec.id, ": empty prompt"));
  }
  if (spec.max_new_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sequence ", spec.id, ": max_new_tokens must be >= 1, got ", spec.max_new_tokens));
  }
  for (int32_t t : spec.prompt_token_ids) {
    if (t < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", spec.id, ": negative token id ", t, " in prompt"));
    }
  }
  if (prompt_len >= static_cast<size_t>(options_.max_model_len)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sequence ", spec.id, ": prompt of ", prompt_len, " tokens leaves no room to generate ",
        "under max_model_len ", options_.max_model_len));
  }
  auto seq = std::make_unique<Sequence>(std::move(spec), next_arrival_);
  // The last token is sampled, never fed, so the KV holds at most MaxLength - 1 tokens.
  const int max_len = seq->MaxLength(options_.max_model_len);
  const int blocks = kv_->BlocksForTokens(max_len - 1);
  if (blocks > kv_->num_blocks()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sequence ", seq->id(), ": up to ", max_len, " tokens need ", blocks,
        " KV blocks but the cache has ", kv_->num_blocks(), "; lower max_new_tokens"));
  }
  ++next_arrival_;
  waiting_.push_back(seq.get());
  seqs_.emplace(seq->id(), std::move(seq));
  return absl::OkStatus();
}

int Scheduler::ChunkSize(int remaining, int budget) const {
  int n = remaining;
  if (options_.enable_chunked_prefill && options_.long_prefill_token_threshold > 0) {
    n = std::min(n, options_.long_prefill_token_threshold);
  }
  if (n > budget) n = options_.enable_chunked_prefill ? budget : 0;
  return n;
}

void Scheduler::Preempt(Sequence* s, int* budget, SchedulerOutput* out) {
  kv_->Free(s->id());
  if (s->step_tokens > 0) {
    *budget += s->step_tokens;  // scheduled earlier in this step; BuildOutput skips it
    s->step_tokens = 0;
  }
  s->num_computed_tokens = 0;
  s->status = SeqStatus::kPreempted;
  s->executed_since_admission = false;
  ++s->num_preemptions;
  ++num_preemptions_;
  if (running_.back() == s) {
    running_.pop_back();  // the usual victim
  } else {
    running_.erase(std::find(running_.begin(), running_.end(), s));
  }
  waiting_.push_front(s);
  out->preempted_ids.push_back(s->id());
}

bool Scheduler::AllocateOrPreempt(Sequence* s, int num_new, int* budget, SchedulerOutput* out) {
  while (!kv_->AllocateSlots(s->id(), s->spec.cache_salt, s->num_computed_tokens, num_new)) {
    Sequence* victim = running_.back();
    Preempt(victim, budget, out);
    if (victim == s) return false;
  }
  return true;
}

void Scheduler::InsertRunning(Sequence* s) {
  auto pos = std::upper_bound(running_.begin(), running_.end(), s,
                              [](const Sequence* a, const Sequence* b) {
                                return a->arrival < b->arrival;
                              });
  running_.insert(pos, s);
}

SchedulerOutput Scheduler::Schedule() {
  SchedulerOutput out;
  // A pending step that was never applied did not happen: forget its schedule.
  for (uint64_t id : step_ids_) {
    if (auto it = seqs_.find(id); it != seqs_.end()) it->second->step_tokens = 0;
  }
  step_ids_.clear();
  out.finished_ids = std::move(finished_since_schedule_);
  finished_since_schedule_.clear();

  int budget = options_.max_num_batched_tokens;
  std::vector<Sequence*> scheduled;
  scheduled.reserve(running_.size());

  // Running sequences: decodes first so that a long prefill cannot stall them, then
  // prefill chunks. Preemption takes from the back of running_, never an index below i.
  for (int pass = 0; pass < 2; ++pass) {
    const bool decodes = pass == 0;
    for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
      Sequence* s = running_[i];
      const int remaining = s->num_tokens() - s->num_computed_tokens;
      if ((remaining == 1) != decodes || s->step_tokens > 0) continue;
      const int n = ChunkSize(remaining, budget);
      if (n == 0) continue;
      if (!AllocateOrPreempt(s, n, &budget, &out)) continue;
      s->step_tokens = n;
      budget -= n;
      scheduled.push_back(s);
    }
  }

  // Waiting sequences, FCFS, only when memory was not just found short.
  if (out.preempted_ids.empty()) {
    while (!waiting_.empty() && budget > 0 &&
           running_.size() < static_cast<size_t>(options_.max_num_seqs)) {
      Sequence* s = waiting_.front();
      ComputedPrefix prefix = kv_->GetComputedBlocks(s->tokens, s->spec.cache_salt);
      const int n = ChunkSize(s->num_tokens() - prefix.num_tokens, budget);
      if (n == 0) break;
      if (!kv_->AllocateSlots(s->id(), s->spec.cache_salt, prefix.num_tokens, n, &prefix)) break;
      waiting_.pop_front();
      s->num_computed_tokens = prefix.num_tokens;
      s->status = SeqStatus::kRunning;
      s->executed_since_admission = false;
      InsertRunning(s);
      s->step_tokens = n;
      budget -= n;
      scheduled.push_back(s);
    }
  }

  for (Sequence* s : scheduled) {
    if (s->step_tokens == 0) continue;  // preempted later in this step
    ScheduledSequence e;
    e.id = s->id();
    e.start_position = s->num_computed_tokens;
    e.num_tokens = s->step_tokens;
    e.sample = e.start_position + e.num_tokens == s->num_tokens();
    e.is_new = !s->executed_since_admission;
    s->step_sample = e.sample;
    e.token_offset = static_cast<int>(out.token_ids.size());
    out.token_ids.insert(out.token_ids.end(), s->tokens.begin() + e.start_position,
                         s->tokens.begin() + e.start_position + e.num_tokens);
    const std::vector<int32_t>& table = kv_->BlockTable(s->id());
    e.block_offset = static_cast<int>(out.block_tables.size());
    e.num_blocks = static_cast<int>(table.size());
    out.block_tables.insert(out.block_tables.end(), table.begin(), table.end());
    out.num_batched_tokens += e.num_tokens;
    out.sequences.push_back(e);
    step_ids_.push_back(e.id);
  }
  step_pending_ = true;
  return out;
}

absl::StatusOr<std::vector<FinishedSequence>> Scheduler::UpdateFromOutput(
    std::span<const SampledToken> sampled) {
  if (!step_pending_) {
    return absl::FailedPreconditionError("UpdateFromOutput without a scheduled step");
  }
  // Validate everything before changing anything; the stamp marks tokens seen in this call.
  const int64_t stamp = ++update_calls_;
  for (const SampledToken& t : sampled) {
    auto it = seqs_.find(t.seq_id);
    if (it == seqs_.end()) continue;  // ended since Schedule
    Sequence* s = it->second.get();
    if (s->step_tokens == 0 || !s->step_sample) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", t.seq_id, " did not sample in this step"));
    }
    if (t.token_id < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", t.seq_id, ": negative sampled token ", t.token_id));
    }
    if (s->sampled_stamp == stamp) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", t.seq_id, " has two sampled tokens"));
    }
    s->sampled_stamp = stamp;
    s->sampled_token = t.token_id;
  }
  for (uint64_t id : step_ids_) {
    auto it = seqs_.find(id);
    if (it == seqs_.end()) continue;
    const Sequence& s = *it->second;
    if (s.step_tokens > 0 && s.step_sample && s.sampled_stamp != stamp) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", id, " should have sampled a token in this step"));
    }
  }

  std::vector<FinishedSequence> finished;
  for (uint64_t id : step_ids_) {
    auto it = seqs_.find(id);
    if (it == seqs_.end()) continue;
    Sequence* s = it->second.get();
    if (s->step_tokens == 0) continue;
    s->num_computed_tokens += s->step_tokens;
    s->step_tokens = 0;
    s->executed_since_admission = true;
    kv_->MarkComputed(id, s->tokens, s->num_computed_tokens);
    if (!s->step_sample) continue;
    const FinishReason reason = s->AppendToken(s->sampled_token, options_.max_model_len);
    if (reason != FinishReason::kNone) finished.push_back(End(s, reason));
  }
  step_ids_.clear();
  step_pending_ = false;
  return finished;
}

FinishedSequence Scheduler::End(Sequence* s, FinishReason reason) {
  kv_->Free(s->id());
  if (s->status == SeqStatus::kRunning) {
    running_.erase(std::find(running_.begin(), running_.end(), s));
  } else {
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), s));
  }
  FinishedSequence f;
  f.id = s->id();
  f.reason = reason;
  auto out = s->output_token_ids();
  f.output_token_ids.assign(out.begin(), out.end());
  finished_since_schedule_.push_back(f.id);
  seqs_.erase(f.id);  // destroys *s
  return f;
}

absl::StatusOr<FinishedSequence> Scheduler::Finish(uint64_t id, FinishReason reason) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) {
    return absl::NotFoundError(absl::StrCat("sequence ", id, " is not active"));
  }
  if (reason == FinishReason::kNone) {
    return absl::InvalidArgumentError("Finish needs a reason");
  }
  return End(it->second.get(), reason);
}

absl::Status Scheduler::Abort(uint64_t id) {
  auto f = Finish(id, FinishReason::kAbort);
  return f.ok() ? absl::OkStatus() : f.status();
}

const Sequence* Scheduler::Find(uint64_t id) const {
  auto it = seqs_.find(id);
  return it == seqs_.end() ? nullptr : it->second.get();
}

SchedulerStats Scheduler::Stats() const {
  SchedulerStats st;
  st.num_waiting = static_cast<int>(waiting_.size());
  st.num_running = static_cast<int>(running_.size());
  st.num_preemptions_total = num_preemptions_;
  st.kv = kv_->Usage();
  return st;
}

}  // namespace tessera
