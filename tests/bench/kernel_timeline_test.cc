// The kernel account of tessera-bench-decode --trace-batches: overlapping kernels are
// charged for what they add to the step, and gaps are where no kernel ran.
#include "bench/decode/kernel_timeline.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace tessera::bench {
namespace {

const KernelAccountRow& Row(const KernelTimelineAccount& a, const std::string& name) {
  for (const KernelAccountRow& r : a.rows) {
    if (r.name == name) return r;
  }
  static const KernelAccountRow none;
  ADD_FAILURE() << "no row " << name;
  return none;
}

TEST(KernelTimelineTest, SerialKernelsAreChargedTheirDurationsAndGapsAreTheRest) {
  const auto a = AccountKernelTimeline({{"norm", 100, 110}, {"gemv", 115, 145}, {"norm", 150, 160}});
  EXPECT_EQ(a.span_ns, 60);
  EXPECT_EQ(a.gaps_ns, 10);
  EXPECT_EQ(Row(a, "norm").calls, 2);
  EXPECT_EQ(Row(a, "norm").advance_ns, 20);
  EXPECT_EQ(Row(a, "gemv").advance_ns, 30);
  EXPECT_EQ(a.rows.front().name, "gemv");  // largest advance first
}

TEST(KernelTimelineTest, AnEarlyStartedKernelIsChargedOnlyForWhatItAddsAfterThePreviousEnd) {
  // The gemv starts (programmatic launch) 5 ns into the norm and ends 20 ns after it.
  const auto a = AccountKernelTimeline({{"gemv", 105, 130}, {"norm", 100, 110}});
  EXPECT_EQ(a.span_ns, 30);
  EXPECT_EQ(a.gaps_ns, 0);
  EXPECT_EQ(Row(a, "norm").advance_ns, 10);
  EXPECT_EQ(Row(a, "gemv").advance_ns, 20);
  EXPECT_EQ(Row(a, "gemv").duration_ns, 25);
}

TEST(KernelTimelineTest, AKernelEndingInsideFinishedWorkAddsNothing) {
  const auto a = AccountKernelTimeline({{"attention", 0, 50}, {"prefill", 10, 40}, {"o_proj", 60, 70}});
  EXPECT_EQ(Row(a, "prefill").advance_ns, 0);
  EXPECT_EQ(Row(a, "prefill").duration_ns, 30);
  EXPECT_EQ(a.span_ns, Row(a, "attention").advance_ns + Row(a, "o_proj").advance_ns + a.gaps_ns);
  EXPECT_EQ(a.gaps_ns, 10);
}

TEST(KernelTimelineTest, StepsLeaveOutTheHostTimeBetweenThem) {
  // Step 1 starts (host) at 90, step 2 at 200; the 60 ns from 140 to 200 are the host's.
  const auto a = AccountKernelSteps({{"gemv", 205, 240}, {"norm", 100, 110}, {"gemv", 112, 140}, {"norm", 250, 255}},
                                    {200, 90});
  EXPECT_EQ(a.span_ns, 40 + 50);
  EXPECT_EQ(a.gaps_ns, 2 + 10);
  EXPECT_EQ(Row(a, "gemv").calls, 2);
  EXPECT_EQ(Row(a, "gemv").advance_ns, 28 + 35);
  EXPECT_EQ(Row(a, "norm").advance_ns, 10 + 5);
}

TEST(KernelTimelineTest, EmptyTraceHasNoSpan) {
  const auto a = AccountKernelTimeline({});
  EXPECT_EQ(a.span_ns, 0);
  EXPECT_TRUE(a.rows.empty());
  EXPECT_THAT(FormatKernelTimeline(a, 1), ::testing::HasSubstr("span"));
}

TEST(KernelTimelineTest, FormatGivesMicrosecondsPerStep) {
  const auto a = AccountKernelTimeline({{"gemv", 0, 4000}, {"gemv", 5000, 9000}});
  const std::string text = FormatKernelTimeline(a, 2);
  EXPECT_THAT(text, ::testing::HasSubstr("gemv"));
  EXPECT_THAT(text, ::testing::ContainsRegex("gemv +1\\.0 +4\\.0 +4\\.0 +88\\.9%"));
  EXPECT_THAT(text, ::testing::ContainsRegex("no kernel running\\) +0\\.5 +11\\.1%"));
}

TEST(KernelTimelineTest, ShortNamesDropReturnTypeNamespacesAndArguments) {
  EXPECT_EQ(ShortKernelName("void tessera::cuda::(anonymous namespace)::Int4DecodeKernel<1, 2, 2, 2, false>("
                            "tessera::cuda::(anonymous namespace)::DecodeArgs)"),
            "Int4DecodeKernel<1, 2, 2, 2, false>");
  EXPECT_EQ(ShortKernelName("tessera::cuda::(anonymous namespace)::RmsNormBf16Kernel(__nv_bfloat16 const*, int)"),
            "RmsNormBf16Kernel");
  EXPECT_EQ(ShortKernelName("sm90_xmma_gemm_bf16bf16_bf16f32"), "sm90_xmma_gemm_bf16bf16_bf16f32");
}

}  // namespace
}  // namespace tessera::bench
