// Sequence: the stop conditions applied to one sampled token.
#include "runtime/scheduler/sequence.h"

#include "gtest/gtest.h"

namespace tessera {
namespace {

SequenceSpec Base() {
  SequenceSpec s;
  s.id = 1;
  s.prompt_token_ids = {5, 6, 7};
  s.max_new_tokens = 3;
  s.eos_token_id = 2;
  s.stop_token_ids = {9};
  return s;
}

TEST(Sequence, EosAndStopTokensEndWithStopAndAreKept) {
  Sequence eos(Base(), 0);
  EXPECT_EQ(eos.AppendToken(2, 100), FinishReason::kStop);
  EXPECT_EQ(eos.num_output_tokens(), 1);
  Sequence stop(Base(), 0);
  EXPECT_EQ(stop.AppendToken(4, 100), FinishReason::kNone);
  EXPECT_EQ(stop.AppendToken(9, 100), FinishReason::kStop);
  EXPECT_EQ(std::vector<int32_t>(stop.output_token_ids().begin(), stop.output_token_ids().end()),
            (std::vector<int32_t>{4, 9}));
}

TEST(Sequence, IgnoreEosKeepsOtherStopTokens) {
  SequenceSpec spec = Base();
  spec.ignore_eos = true;
  Sequence s(spec, 0);
  EXPECT_EQ(s.AppendToken(2, 100), FinishReason::kNone);
  EXPECT_EQ(s.AppendToken(9, 100), FinishReason::kStop);
}

TEST(Sequence, LengthLimits) {
  Sequence by_tokens(Base(), 0);
  EXPECT_EQ(by_tokens.AppendToken(4, 100), FinishReason::kNone);
  EXPECT_EQ(by_tokens.AppendToken(4, 100), FinishReason::kNone);
  EXPECT_EQ(by_tokens.AppendToken(4, 100), FinishReason::kLength);
  Sequence by_context(Base(), 0);
  EXPECT_EQ(by_context.AppendToken(4, 5), FinishReason::kNone);
  EXPECT_EQ(by_context.AppendToken(4, 5), FinishReason::kLength);
  EXPECT_EQ(by_context.MaxLength(5), 5);
  EXPECT_EQ(by_context.MaxLength(100), 6);
}

TEST(Sequence, StopTokenOnTheLastAllowedTokenReportsStop) {
  Sequence s(Base(), 0);
  s.AppendToken(4, 100);
  s.AppendToken(4, 100);
  EXPECT_EQ(s.AppendToken(9, 100), FinishReason::kStop);
}

TEST(FinishReasonName, UsesOpenAiVocabulary) {
  EXPECT_EQ(FinishReasonName(FinishReason::kStop), "stop");
  EXPECT_EQ(FinishReasonName(FinishReason::kLength), "length");
  EXPECT_EQ(FinishReasonName(FinishReason::kAbort), "abort");
}

}  // namespace
}  // namespace tessera
