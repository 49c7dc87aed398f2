// Drives a Scheduler the way the engine does, with scripted sampled tokens, and checks
// invariants of every step's output on the way.
#pragma once

#include <functional>
#include <map>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/scheduler/scheduler.h"

namespace tessera::testing {

// The token a sequence samples at output index k: distinct per sequence and position, and
// independent of how the sequence was scheduled, so outputs can be compared after
// preemption.
inline int32_t ScriptedToken(uint64_t id, int k) { return static_cast<int32_t>(1000 + 100 * id + k); }

inline std::vector<int32_t> Prompt(int n, int32_t first = 1) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

inline SequenceSpec Spec(uint64_t id, std::vector<int32_t> prompt, int max_new_tokens) {
  SequenceSpec s;
  s.id = id;
  s.prompt_token_ids = std::move(prompt);
  s.max_new_tokens = max_new_tokens;
  return s;
}

inline SchedulerOptions SmallOptions(int num_blocks, int block_size = 4) {
  SchedulerOptions o;
  o.max_num_seqs = 8;
  o.max_num_batched_tokens = 32;
  o.max_model_len = 256;
  o.kv.num_blocks = num_blocks;
  o.kv.block_size = block_size;
  return o;
}

struct StepResult {
  SchedulerOutput out;
  std::vector<FinishedSequence> finished;
};

// Checks what a runner relies on: the budget and cap hold, the fed tokens are the
// sequence's own tokens at its positions, the block table covers them, and no block written
// this step is referenced by another scheduled sequence.
inline void CheckOutput(const Scheduler& s, const SchedulerOutput& out) {
  const SchedulerOptions& o = s.options();
  EXPECT_LE(out.num_batched_tokens, o.max_num_batched_tokens);
  EXPECT_LE(static_cast<int>(out.sequences.size()), o.max_num_seqs);
  int total = 0;
  std::map<int32_t, int> refs;
  std::vector<int32_t> written;
  for (const ScheduledSequence& e : out.sequences) {
    total += e.num_tokens;
    EXPECT_GT(e.num_tokens, 0);
    const Sequence* q = s.Find(e.id);
    ASSERT_NE(q, nullptr);
    EXPECT_EQ(e.start_position, q->num_computed_tokens);
    EXPECT_EQ(e.sample, e.start_position + e.num_tokens == q->num_tokens());
    auto fed = out.Tokens(e);
    EXPECT_TRUE(std::equal(fed.begin(), fed.end(), q->tokens.begin() + e.start_position));
    auto table = out.BlockTable(e);
    EXPECT_GE(static_cast<int64_t>(table.size()) * o.kv.block_size,
              e.start_position + e.num_tokens);
    for (int32_t b : table) ++refs[b];
    for (int p = e.start_position; p < e.start_position + e.num_tokens; ++p) {
      written.push_back(table[p / o.kv.block_size]);
    }
  }
  EXPECT_EQ(total, out.num_batched_tokens);
  std::sort(written.begin(), written.end());
  written.erase(std::unique(written.begin(), written.end()), written.end());
  for (int32_t b : written) EXPECT_EQ(refs[b], 1) << "block " << b << " written while shared";
}

using TokenFn = std::function<int32_t(uint64_t id, int k)>;

inline StepResult Step(Scheduler& s, const TokenFn& token = ScriptedToken) {
  StepResult r;
  r.out = s.Schedule();
  CheckOutput(s, r.out);
  std::vector<SampledToken> sampled;
  for (const ScheduledSequence& e : r.out.sequences) {
    if (e.sample) sampled.push_back({e.id, token(e.id, s.Find(e.id)->num_output_tokens())});
  }
  auto finished = s.UpdateFromOutput(sampled);
  EXPECT_TRUE(finished.ok()) << finished.status();
  if (finished.ok()) r.finished = std::move(finished).value();
  return r;
}

// Steps until nothing is left (at most max_steps); returns finished sequences by id.
inline std::map<uint64_t, FinishedSequence> RunToCompletion(
    Scheduler& s, int max_steps, const std::function<void(const StepResult&)>& on_step = {}) {
  std::map<uint64_t, FinishedSequence> done;
  for (int i = 0; i < max_steps && s.HasUnfinished(); ++i) {
    StepResult r = Step(s);
    if (on_step) on_step(r);
    for (FinishedSequence& f : r.finished) done[f.id] = std::move(f);
  }
  EXPECT_FALSE(s.HasUnfinished()) << "not done after " << max_steps << " steps";
  return done;
}

inline std::vector<int32_t> ExpectedOutput(uint64_t id, int n) {
  std::vector<int32_t> out(n);
  for (int k = 0; k < n; ++k) out[k] = ScriptedToken(id, k);
  return out;
}

}  // namespace tessera::testing
