// ServingMetrics: what one scrape of the step counters may show while steps are recorded.
#include "server/metrics/metrics.h"

#include <atomic>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "runtime/engine/engine.h"
#include "tests/testing/prometheus_text.h"

namespace tessera {
namespace {

TEST(ServingMetricsTest, EachScrapeSeesWholeStepsWhileStepsAreRecorded) {
  ServingMetrics metrics("m");
  // Every step's seconds, forward and launch are equal, so any scrape that saw part of a
  // step would show launch or forward seconds apart from the step seconds.
  StepInfo step;
  step.seconds = 1.0;
  step.forward_seconds = 1.0;
  step.launch_seconds = 1.0;
  step.batched_tokens = 3;
  std::atomic<bool> done{false};
  std::thread recorder([&] {
    for (int i = 0; i < 20000; ++i) metrics.RecordStep(step);
    done = true;
  });
  int scrapes = 0;
  while (!done || scrapes == 0) {
    const std::string text = metrics.Serialize();
    const double steps = testing::MetricValue(text, "tessera_engine_steps_total{");
    ASSERT_EQ(testing::MetricValue(text, "tessera_engine_step_seconds_total{"), steps) << text;
    ASSERT_EQ(testing::MetricValue(text, "tessera_engine_forward_seconds_total{"), steps) << text;
    ASSERT_EQ(testing::MetricValue(text, "tessera_engine_host_seconds_total{kind=\"eager\",model=\"m\",phase=\"launch\""), steps);
    ASSERT_EQ(testing::MetricValue(text, "tessera_engine_step_tokens_total{"), 3 * steps);
    ++scrapes;
  }
  recorder.join();
  const std::string last = metrics.Serialize();
  EXPECT_EQ(testing::MetricValue(last, "tessera_engine_steps_total{"), 20000);
  EXPECT_EQ(testing::MetricValue(last, "tessera_engine_step_seconds_count"), 20000);
}

}  // namespace
}  // namespace tessera
