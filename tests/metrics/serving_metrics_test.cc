// ServingMetrics: what one scrape of the step counters may show while steps are recorded.
#include "server/metrics/metrics.h"

#include <atomic>
#include <sstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "runtime/engine/engine.h"

namespace tessera {
namespace {

double Sample(const std::string& text, const std::string& name_and_labels_prefix) {
  double total = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name_and_labels_prefix, 0) == 0) total += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return total;
}

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
    const double steps = Sample(text, "tessera_engine_steps_total{");
    ASSERT_EQ(Sample(text, "tessera_engine_step_seconds_total{"), steps) << text;
    ASSERT_EQ(Sample(text, "tessera_engine_forward_seconds_total{"), steps) << text;
    ASSERT_EQ(Sample(text, "tessera_engine_host_seconds_total{kind=\"eager\",model=\"m\",phase=\"launch\""), steps);
    ASSERT_EQ(Sample(text, "tessera_engine_step_tokens_total{"), 3 * steps);
    ++scrapes;
  }
  recorder.join();
  const std::string last = metrics.Serialize();
  EXPECT_EQ(Sample(last, "tessera_engine_steps_total{"), 20000);
  EXPECT_EQ(Sample(last, "tessera_engine_step_seconds_count"), 20000);
}

}  // namespace
}  // namespace tessera
