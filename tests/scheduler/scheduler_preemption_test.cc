// Scheduler under memory pressure: who is preempted, how recompute resumes, and that every
// request still produces its full output with no starvation.
#include <random>

#include "gtest/gtest.h"
#include "runtime/scheduler/scheduler.h"
#include "tests/scheduler/scheduler_test_util.h"

namespace tessera {
namespace {

using testing::ExpectedOutput;
using testing::Prompt;
using testing::RunToCompletion;
using testing::SmallOptions;
using testing::Spec;
using testing::Step;

// 8 blocks of 4 tokens; three sequences that each grow to 4 blocks cannot all stay.
SchedulerOptions TightOptions(bool prefix_caching) {
  SchedulerOptions o = SmallOptions(8);
  o.kv.enable_prefix_caching = prefix_caching;
  return o;
}

TEST(SchedulerPreemption, PreemptsTheYoungestWhenBlocksRunOut) {
  auto s = Scheduler::Create(TightOptions(false)).value();
  for (uint64_t id = 1; id <= 3; ++id) {
    ASSERT_TRUE(s->AddRequest(Spec(id, Prompt(4, 10 * id), 10)).ok());
  }
  std::vector<uint64_t> preempted;
  auto done = RunToCompletion(*s, 200, [&](const testing::StepResult& r) {
    preempted.insert(preempted.end(), r.out.preempted_ids.begin(), r.out.preempted_ids.end());
  });
  ASSERT_FALSE(preempted.empty());
  EXPECT_EQ(preempted.front(), 3u);
  EXPECT_EQ(s->Stats().num_preemptions_total, static_cast<int64_t>(preempted.size()));
  ASSERT_EQ(done.size(), 3u);
  for (uint64_t id = 1; id <= 3; ++id) {
    EXPECT_EQ(done.at(id).output_token_ids, ExpectedOutput(id, 10)) << "sequence " << id;
    EXPECT_EQ(done.at(id).reason, FinishReason::kLength);
  }
}

// Runs until a step preempts; returns that step's output.
SchedulerOutput StepUntilPreemption(Scheduler& s) {
  for (int i = 0; i < 100; ++i) {
    testing::StepResult r = Step(s);
    if (!r.out.preempted_ids.empty()) return r.out;
  }
  ADD_FAILURE() << "no preemption";
  return {};
}

TEST(SchedulerPreemption, RecomputeFeedsPromptAndGeneratedTokens) {
  auto s = Scheduler::Create(TightOptions(false)).value();
  for (uint64_t id = 1; id <= 3; ++id) {
    ASSERT_TRUE(s->AddRequest(Spec(id, Prompt(4, 10 * id), 10)).ok());
  }
  SchedulerOutput out = StepUntilPreemption(*s);
  ASSERT_EQ(out.preempted_ids, (std::vector<uint64_t>{3}));
  const Sequence* three = s->Find(3);
  ASSERT_NE(three, nullptr);
  EXPECT_EQ(three->status, SeqStatus::kPreempted);
  EXPECT_EQ(three->num_computed_tokens, 0);
  EXPECT_TRUE(s->kv().BlockTable(3).empty());
  std::vector<int32_t> expected = Prompt(4, 30);
  for (int32_t t : ExpectedOutput(3, three->num_output_tokens())) expected.push_back(t);
  ASSERT_EQ(three->tokens, expected);

  for (int i = 0; i < 100; ++i) {
    testing::StepResult r = Step(*s);
    for (const ScheduledSequence& e : r.out.sequences) {
      if (e.id != 3) continue;
      EXPECT_TRUE(e.is_new);
      EXPECT_EQ(e.start_position, 0);
      auto fed = r.out.Tokens(e);
      EXPECT_EQ(std::vector<int32_t>(fed.begin(), fed.end()), expected);
      EXPECT_TRUE(e.sample);
      return;
    }
  }
  ADD_FAILURE() << "sequence 3 never resumed";
}

TEST(SchedulerPreemption, RecomputeReusesItsOwnCachedBlocks) {
  auto s = Scheduler::Create(TightOptions(true)).value();
  // 1 finishes in the step that preempts 3, so 3 comes back before its freed blocks are
  // reused: 3 holds 9 tokens then, 2 full blocks of which are still cached.
  ASSERT_TRUE(s->AddRequest(Spec(1, Prompt(4, 10), 6)).ok());
  ASSERT_TRUE(s->AddRequest(Spec(2, Prompt(4, 20), 10)).ok());
  ASSERT_TRUE(s->AddRequest(Spec(3, Prompt(4, 30), 10)).ok());
  SchedulerOutput out = StepUntilPreemption(*s);
  ASSERT_EQ(out.preempted_ids, (std::vector<uint64_t>{3}));
  ASSERT_EQ(s->Find(3)->num_tokens(), 9);
  testing::StepResult r = Step(*s);
  const ScheduledSequence* three = nullptr;
  for (const ScheduledSequence& e : r.out.sequences) {
    if (e.id == 3) three = &e;
  }
  ASSERT_NE(three, nullptr);
  EXPECT_TRUE(three->is_new);
  EXPECT_EQ(three->start_position, 8);
  EXPECT_EQ(three->num_tokens, 1);
  EXPECT_EQ(r.out.Tokens(*three)[0], testing::ScriptedToken(3, 4));
  auto done = RunToCompletion(*s, 100);
  EXPECT_EQ(done.at(3).output_token_ids, ExpectedOutput(3, 10));
}

TEST(SchedulerPreemption, PreemptedSequenceIsReadmittedBeforeLaterArrivals) {
  auto s = Scheduler::Create(TightOptions(false)).value();
  for (uint64_t id = 1; id <= 3; ++id) {
    ASSERT_TRUE(s->AddRequest(Spec(id, Prompt(4, 10 * id), 10)).ok());
  }
  StepUntilPreemption(*s);
  ASSERT_TRUE(s->AddRequest(Spec(4, Prompt(2, 400), 1)).ok());
  for (int i = 0; i < 100; ++i) {
    testing::StepResult r = Step(*s);
    for (const ScheduledSequence& e : r.out.sequences) {
      if (e.id == 4) FAIL() << "4 admitted before the preempted 3";
      if (e.id == 3) return;
    }
  }
  ADD_FAILURE() << "sequence 3 never resumed";
}

TEST(SchedulerPreemption, LongRequestFinishesUnderAStreamOfShortOnes) {
  SchedulerOptions o = SmallOptions(64);
  o.max_num_batched_tokens = 16;
  auto s = Scheduler::Create(o).value();
  uint64_t next_id = 1;
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(s->AddRequest(Spec(next_id++, Prompt(6), 3)).ok());
  const uint64_t long_id = next_id++;
  ASSERT_TRUE(s->AddRequest(Spec(long_id, Prompt(120, 500), 4)).ok());
  int finished_at = -1;
  for (int step = 0; step < 200 && finished_at < 0; ++step) {
    for (int i = 0; i < 2; ++i) ASSERT_TRUE(s->AddRequest(Spec(next_id++, Prompt(6), 3)).ok());
    for (const FinishedSequence& f : Step(*s).finished) {
      if (f.id == long_id) {
        finished_at = step;
        EXPECT_EQ(f.output_token_ids, ExpectedOutput(long_id, 4));
      }
    }
  }
  ASSERT_GE(finished_at, 0) << "the long request starved";
  // 8 short ones ahead of it, then 120 prompt tokens at >= 16 - 7 decodes per step.
  EXPECT_LT(finished_at, 40);
}

TEST(SchedulerPreemption, RandomLoadOnATinyPoolCompletesEveryRequest) {
  SchedulerOptions o = SmallOptions(12);
  o.max_num_seqs = 6;
  o.max_num_batched_tokens = 10;
  o.max_model_len = 48;
  auto s = Scheduler::Create(o).value();
  std::mt19937 rng(7);
  std::map<uint64_t, int> max_new;
  std::map<uint64_t, FinishedSequence> done;
  uint64_t next_id = 1;
  int64_t preemptions_seen = 0;
  for (int step = 0; step < 3000 && (next_id <= 40 || s->HasUnfinished()); ++step) {
    if (next_id <= 40 && rng() % 3 == 0) {
      const int prompt_len = 1 + static_cast<int>(rng() % 20);
      const int new_tokens = 1 + static_cast<int>(rng() % 20);
      // Half of them share a prompt head, so prefix hits and shared blocks are exercised.
      std::vector<int32_t> prompt = Prompt(prompt_len, rng() % 2 ? 1 : 100 * next_id);
      ASSERT_TRUE(s->AddRequest(Spec(next_id, prompt, new_tokens)).ok());
      max_new[next_id++] = new_tokens;
    }
    testing::StepResult r = Step(*s);
    preemptions_seen += static_cast<int64_t>(r.out.preempted_ids.size());
    for (FinishedSequence& f : r.finished) done[f.id] = std::move(f);
  }
  EXPECT_FALSE(s->HasUnfinished());
  ASSERT_EQ(done.size(), max_new.size());
  for (const auto& [id, n] : max_new) {
    EXPECT_EQ(done.at(id).output_token_ids, ExpectedOutput(id, n)) << "sequence " << id;
  }
  EXPECT_GT(preemptions_seen, 0);  // the pool was tight enough to matter
  EXPECT_GT(s->Stats().kv.prefix_hit_tokens, 0);
  EXPECT_EQ(s->Stats().kv.used_blocks, 0);
}

}  // namespace
}  // namespace tessera
