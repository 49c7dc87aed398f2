// Summary statistics of latency samples (mean, std, percentiles), as serving benchmarks
// such as `vllm bench serve` report them.
#pragma once

#include <cstddef>
#include <vector>

namespace tessera::loadgen {

struct LatencySummary {
  size_t count = 0;
  double mean = 0, stddev = 0, median = 0, p90 = 0, p99 = 0, min = 0, max = 0;
};

// Percentile `q` in [0, 100] with linear interpolation between closest ranks (numpy's
// default), over already sorted samples; 0 for no samples.
double Percentile(const std::vector<double>& sorted, double q);

LatencySummary Summarize(std::vector<double> samples);

}  // namespace tessera::loadgen
