// Scheduler: admission checks, token budget, chunked prefill, ordering, stop handling,
// abort, and the step protocol with the runner.
#include "runtime/scheduler/scheduler.h"

#include <algorithm>

#include "gtest/gtest.h"
#include "tests/scheduler/scheduler_test_util.h"

namespace tessera {
namespace {

using testing::ExpectedOutput;
using testing::Prompt;
using testing::RunToCompletion;
using testing::SmallOptions;
using testing::Spec;
using testing::Step;

std::unique_ptr<Scheduler> Make(const SchedulerOptions& o) {
  auto s = Scheduler::Create(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(s).value();
}

std::vector<uint64_t> Ids(const SchedulerOutput& out) {
  std::vector<uint64_t> ids;
  for (const ScheduledSequence& e : out.sequences) ids.push_back(e.id);
  return ids;
}

const ScheduledSequence* Entry(const SchedulerOutput& out, uint64_t id) {
  for (const ScheduledSequence& e : out.sequences) {
    if (e.id == id) return &e;
  }
  return nullptr;
}

TEST(SchedulerOptions, RejectsInconsistentLimits) {
  SchedulerOptions o = SmallOptions(16);
  EXPECT_TRUE(o.Validate().ok());
  o.max_num_batched_tokens = o.max_num_seqs - 1;
  EXPECT_FALSE(o.Validate().ok());
  o = SmallOptions(16);
  o.enable_chunked_prefill = false;  // 32-token budget cannot hold a 256-token prompt
  EXPECT_FALSE(o.Validate().ok());
  o = SmallOptions(0);
  EXPECT_FALSE(Scheduler::Create(o).ok());
}

TEST(Scheduler, RefusesAtAdmissionWhatCanNeverFit) {
  SchedulerOptions o = SmallOptions(4);  // 16 token slots
  o.max_model_len = 64;
  auto s = Make(o);
  // 12 + 5 = 17 tokens: the KV holds 16 (the last token is only sampled).
  EXPECT_TRUE(s->AddRequest(Spec(1, Prompt(12), 5)).ok());
  absl::Status too_big = s->AddRequest(Spec(2, Prompt(12), 6));
  EXPECT_EQ(too_big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_big.message().find("KV blocks"), std::string::npos) << too_big;
  absl::Status too_long = s->AddRequest(Spec(3, Prompt(64), 1));
  EXPECT_EQ(too_long.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_long.message().find("max_model_len"), std::string::npos) << too_long;
  EXPECT_EQ(s->AddRequest(Spec(1, Prompt(3), 1)).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(s->AddRequest(Spec(4, {}, 1)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->AddRequest(Spec(5, Prompt(3), 0)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->AddRequest(Spec(6, {1, -2}, 1)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Stats().num_waiting, 1);
}

TEST(Scheduler, ChunkedPrefillSplitsALongPromptAndCompletesIt) {
  SchedulerOptions o = SmallOptions(64);
  o.max_num_batched_tokens = 16;
  auto s = Make(o);
  const std::vector<int32_t> prompt = Prompt(50);
  ASSERT_TRUE(s->AddRequest(Spec(1, prompt, 3)).ok());
  std::vector<int> starts, sizes;
  std::vector<bool> samples;
  auto done = RunToCompletion(*s, 20, [&](const testing::StepResult& r) {
    ASSERT_EQ(r.out.sequences.size(), 1u);
    starts.push_back(r.out.sequences[0].start_position);
    sizes.push_back(r.out.sequences[0].num_tokens);
    samples.push_back(r.out.sequences[0].sample);
  });
  EXPECT_EQ(starts, (std::vector<int>{0, 16, 32, 48, 50, 51}));
  EXPECT_EQ(sizes, (std::vector<int>{16, 16, 16, 2, 1, 1}));
  EXPECT_EQ(samples, (std::vector<bool>{false, false, false, true, true, true}));
  EXPECT_EQ(done.at(1).output_token_ids, ExpectedOutput(1, 3));
  EXPECT_EQ(done.at(1).reason, FinishReason::kLength);
}

TEST(Scheduler, LongPrefillThresholdCapsOneSequencesChunk) {
  SchedulerOptions o = SmallOptions(64);
  o.long_prefill_token_threshold = 10;
  auto s = Make(o);
  ASSERT_TRUE(s->AddRequest(Spec(1, Prompt(25), 1)).ok());
  ASSERT_TRUE(s->AddRequest(Spec(2, Prompt(25, 300), 1)).ok());
  testing::StepResult r = Step(*s);
  ASSERT_EQ(r.out.sequences.size(), 2u);
  EXPECT_EQ(r.out.sequences[0].num_tokens, 10);
  EXPECT_EQ(r.out.sequences[1].num_tokens, 10);
}

TEST(Scheduler, WholePromptsOnlyWithoutChunkedPrefill) {
  SchedulerOptions o = SmallOptions(64);
  o.enable_chunked_prefill = false;
  o.max_model_len = 32;
  auto s = Make(o);
  ASSERT_TRUE(s->AddRequest(Spec(1, Prompt(20), 2)).ok());
  ASSERT_TRUE(s->AddRequest(Spec(2, Prompt(20, 100), 2)).ok());
  testing::StepResult r = Step(*s);
  EXPECT_EQ(Ids(r.out), (std::vector<uint64_t>{1}));  // 2 would need a chunk
  r = Step(*s);
  EXPECT_EQ(Ids(r.out), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(r.out.sequences[1].num_tokens, 20);
}

TEST(Scheduler, AdmitsWaitingSequencesInArrivalOrder) {
  SchedulerOptions o = SmallOptions(64);
  o.max_num_seqs = 2;
  auto s = Make(o);
  ASSERT_TRUE(s->AddRequest(Spec(1, Prompt(4), 1)).ok());
  ASSERT_TRUE(s->AddRequest(Spec(2, Prompt(4), 3)).ok());
  ASSERT_TRUE(s->AddRequest(Spec(3, Prompt(4), 1)).ok());
  ASSERT_TRUE(s->AddRequest(Spec(4, Prompt(4), 1)).ok());
  testing::StepResult r = Step(*s);
  EXPECT_EQ(Ids(r.out), (std::vector<uint64_t>{1, 2}));
  ASSERT_EQ(r.finished.size(), 1u);  // 1 is done after one token
  r = Step(*s);
  EXPECT_EQ(Ids(r.out), (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(r.out.finished_ids, (std::vector<uint64_t>{1}));
}

TEST(Scheduler, DecodesAreScheduledBeforeNewPrefills) {
  SchedulerOptions o = SmallOptions(64);
  o.max_num_batched_tokens = 8;
  auto s = Make(o);
  ASSERT_TRUE(s->AddRequest(Spec(1, Prompt(5), 10)).ok());
  Step(*s);  // 1 prefills and samples
  ASSERT_TRUE(s->AddRequest(Spec(2, Prompt(20, 100), 10)).ok());
  testing::StepResult r = Step(*s);
  ASSERT_EQ(Ids(r.out), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(r.out.sequences[0].num_tokens, 1);
  EXPECT_EQ(r.out.sequences[1].num_tokens, 7);  // the rest of the budget
  EXPECT_TRUE(r.out.sequences[1].is_new);
  EXPECT_FALSE(r.out.sequences[0].is_new);
}

TEST(Scheduler, DecodesGoAheadOfAnOlderSequencesPrefillChunk) {
  SchedulerOptions o = SmallOptions(64);
  o.max_num_batched_tokens = 8;
  o.long_prefill_token_threshold = 6;
  auto s = Make(o);
  ASSERT_TRUE(s->AddRequest(Spec(1, Prompt(40), 2)).ok());  // older, long prompt
  ASSERT_TRUE(s->AddRequest(Spec(2, Prompt(2, 100), 8)).ok());
  testing::StepResult r = Step(*s);
  ASSERT_EQ(Ids(r.out), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(r.out.sequences[0].num_tokens, 6);
  EXPECT_TRUE(r.out.sequences[1].sample);  // 2's whole prompt fit next to 1's chunk
  r = Step(*s);
  ASSERT_EQ(Ids(r.out), (std::vector<uint64_t>{2, 1}));
  EXPECT_EQ(r.out.sequences[0].num_tokens, 1);
  EXPECT_EQ(r.out.sequences[1].num_tokens, 6);
  EXPECT_EQ(r.out.sequences[1].start_position, 6);
}

TEST(Scheduler, TokenBudgetAndSequenceCapHoldEveryStep) {
  SchedulerOptions o = SmallOptions(40);
  o.max_num_seqs = 4;
  o.max_num_batched_tokens = 12;
  auto s = Make(o);
  for (uint64_t id = 1; id <= 12; ++id) {
    ASSERT_TRUE(s->AddRequest(Spec(id, Prompt(3 + 7 * id % 23, id * 50), 2 + id % 5)).ok());
  }
  int steps_at_budget = 0;
  auto done = RunToCompletion(*s, 500, [&](const testing::StepResult& r) {
    if (r.out.num_batched_tokens == o.max_num_batched_tokens) ++steps_at_budget;
  });
  EXPECT_EQ(done.size(), 12u);
  EXPECT_GT(steps_at_budget, 0);  // the budget was the binding limit at times
  for (const auto& [id, f] : done) EXPECT_EQ(f.output_token_ids, ExpectedOutput(id, 2 + id % 5));
}

TEST(Scheduler, StopTokenEndsTheSequenceAndIsKept) {
  auto s = Make(SmallOptions(64));
  SequenceSpec spec = Spec(1, Prompt(5), 50);
  spec.stop_token_ids = {testing::ScriptedToken(1, 3)};
  ASSERT_TRUE(s->AddRequest(spec).ok());
  auto done = RunToCompletion(*s, 60);
  EXPECT_EQ(done.at(1).reason, FinishReason::kStop);
  EXPECT_EQ(done.at(1).output_token_ids, ExpectedOutput(1, 4));
}

TEST(Scheduler, EosStopsUnlessIgnored) {
  auto s = Make(SmallOptions(64));
  SequenceSpec stops = Spec(1, Prompt(5), 20);
  stops.eos_token_id = testing::ScriptedToken(1, 2);
  SequenceSpec ignores = Spec(2, Prompt(5), 6);
  ignores.eos_token_id = testing::ScriptedToken(2, 2);
  ignores.ignore_eos = true;
  ASSERT_TRUE(s->AddRequest(stops).ok());
  ASSERT_TRUE(s->AddRequest(ignores).ok());
  auto done = RunToCompletion(*s, 60);
  EXPECT_EQ(done.at(1).reason, FinishReason::kStop);
  EXPECT_EQ(done.at(1).output_token_ids.size(), 3u);
  EXPECT_EQ(done.at(2).reason, FinishReason::kLength);
  EXPECT_EQ(done.at(2).output_token_ids, ExpectedOutput(2, 6));
}

TEST(Scheduler, MaxModelLenEndsTheSequenceWithLength) {
  SchedulerOptions o = SmallOptions(64);
  o.max_model_len = 20;
  auto s = Make(o);
  ASSERT_TRUE(s->AddRequest(Spec(1, Prompt(15), 100)).ok());
  auto done = RunToCompletion(*s, 60);
  EXPECT_EQ(done.at(1).reason, FinishReason::kLength);
  EXPECT_EQ(done.at(1).output_token_ids, ExpectedOutput(1, 5));
}

TEST(Scheduler, AbortFreesBlocksAtOnceAndLeavesTheNextStep) {
  SchedulerOptions o = SmallOptions(64);
  o.max_num_seqs = 2;
  auto s = Make(o);
  ASSERT_TRUE(s->AddRequest(Spec(1, Prompt(10), 50)).ok());
  ASSERT_TRUE(s->AddRequest(Spec(2, Prompt(10, 100), 50)).ok());
  ASSERT_TRUE(s->AddRequest(Spec(3, Prompt(10, 200), 50)).ok());  // aborted while waiting
  Step(*s);
  Step(*s);
  const int used = s->Stats().kv.used_blocks;
  const int held_by_1 = static_cast<int>(s->kv().BlockTable(1).size());
  ASSERT_GT(held_by_1, 0);
  ASSERT_TRUE(s->Abort(1).ok());
  ASSERT_TRUE(s->Abort(3).ok());
  EXPECT_EQ(s->Stats().kv.used_blocks, used - held_by_1);
  EXPECT_EQ(s->Find(1), nullptr);
  testing::StepResult r = Step(*s);
  EXPECT_EQ(Ids(r.out), (std::vector<uint64_t>{2}));
  EXPECT_EQ(r.out.finished_ids, (std::vector<uint64_t>{1, 3}));
  EXPECT_EQ(s->Abort(1).code(), absl::StatusCode::kNotFound);
}

TEST(Scheduler, AbortBetweenScheduleAndUpdateDropsThatSequencesResult) {
  auto s = Make(SmallOptions(64));
  ASSERT_TRUE(s->AddRequest(Spec(1, Prompt(6), 5)).ok());
  ASSERT_TRUE(s->AddRequest(Spec(2, Prompt(6, 50), 5)).ok());
  SchedulerOutput out = s->Schedule();
  ASSERT_EQ(out.sequences.size(), 2u);
  ASSERT_TRUE(s->Abort(1).ok());
  auto finished = s->UpdateFromOutput(std::vector<SampledToken>{{1, 7}, {2, 8}});
  ASSERT_TRUE(finished.ok()) << finished.status();
  EXPECT_EQ(s->Find(2)->num_computed_tokens, 6);
  EXPECT_EQ(s->Find(2)->tokens.back(), 8);
}

TEST(Scheduler, FinishForAStopStringFreesBlocksAndReportsTheReason) {
  auto s = Make(SmallOptions(64));
  ASSERT_TRUE(s->AddRequest(Spec(1, Prompt(6), 50)).ok());
  Step(*s);
  Step(*s);
  auto f = s->Finish(1, FinishReason::kStop);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->reason, FinishReason::kStop);
  EXPECT_EQ(f->output_token_ids, ExpectedOutput(1, 2));
  EXPECT_EQ(s->Stats().kv.used_blocks, 0);
  EXPECT_FALSE(s->HasUnfinished());
}

TEST(Scheduler, AllBlocksReturnWhenEverySequenceFinishes) {
  SchedulerOptions o = SmallOptions(24);
  auto s = Make(o);
  for (uint64_t id = 1; id <= 10; ++id) {
    ASSERT_TRUE(s->AddRequest(Spec(id, Prompt(5 + id, id * 10), 3 + id)).ok());
  }
  RunToCompletion(*s, 400);
  const SchedulerStats st = s->Stats();
  EXPECT_EQ(st.kv.used_blocks, 0);
  EXPECT_EQ(st.kv.free_blocks, o.kv.num_blocks);
  EXPECT_EQ(st.num_running, 0);
  EXPECT_EQ(st.num_waiting, 0);
}

TEST(Scheduler, SharedPromptPrefixIsNotComputedTwice) {
  auto s = Make(SmallOptions(64));
  const std::vector<int32_t> prompt = Prompt(18);  // 4 full blocks of 4 + 2 tokens
  ASSERT_TRUE(s->AddRequest(Spec(1, prompt, 2)).ok());
  RunToCompletion(*s, 10);
  ASSERT_TRUE(s->AddRequest(Spec(2, prompt, 2)).ok());
  testing::StepResult r = Step(*s);
  ASSERT_EQ(r.out.sequences.size(), 1u);
  EXPECT_EQ(r.out.sequences[0].start_position, 16);
  EXPECT_EQ(r.out.sequences[0].num_tokens, 2);
  EXPECT_EQ(s->Stats().kv.prefix_hit_tokens, 16);
  // A different adapter (salt) computes everything.
  SequenceSpec other = Spec(3, prompt, 2);
  other.cache_salt = 99;
  ASSERT_TRUE(s->AddRequest(other).ok());
  r = Step(*s);
  const ScheduledSequence* three = Entry(r.out, 3);
  ASSERT_NE(three, nullptr);
  EXPECT_EQ(three->start_position, 0);
}

TEST(Scheduler, UpdateRejectsWrongSamplesAndChangesNothing) {
  auto s = Make(SmallOptions(64));
  ASSERT_TRUE(s->AddRequest(Spec(1, Prompt(6), 5)).ok());
  EXPECT_EQ(s->UpdateFromOutput({}).status().code(), absl::StatusCode::kFailedPrecondition);
  SchedulerOutput out = s->Schedule();
  ASSERT_EQ(out.sequences.size(), 1u);
  EXPECT_EQ(s->UpdateFromOutput({}).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<SampledToken> twice = {{1, 5}, {1, 6}};
  EXPECT_EQ(s->UpdateFromOutput(twice).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Find(1)->num_computed_tokens, 0);
  EXPECT_EQ(s->Find(1)->num_tokens(), 6);
  std::vector<SampledToken> good = {{1, 5}};
  ASSERT_TRUE(s->UpdateFromOutput(good).ok());
  EXPECT_EQ(s->Find(1)->num_computed_tokens, 6);
  EXPECT_EQ(s->Find(1)->tokens.back(), 5);
}

TEST(Scheduler, AStepNeverAppliedIsScheduledAgain) {
  auto s = Make(SmallOptions(64));
  ASSERT_TRUE(s->AddRequest(Spec(1, Prompt(6), 5)).ok());
  SchedulerOutput first = s->Schedule();  // the runner fails; no UpdateFromOutput
  SchedulerOutput again = s->Schedule();
  ASSERT_EQ(again.sequences.size(), 1u);
  EXPECT_EQ(again.sequences[0].start_position, first.sequences[0].start_position);
  EXPECT_EQ(again.sequences[0].num_tokens, first.sequences[0].num_tokens);
  EXPECT_TRUE(again.sequences[0].is_new);
  EXPECT_EQ(again.block_tables, first.block_tables);
}

}  // namespace
}  // namespace tessera
