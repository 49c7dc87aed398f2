// Reading samples out of a Prometheus text exposition in tests.
#pragma once

#include <sstream>
#include <string>

namespace tessera::testing {

// The sum of the samples whose line starts with `name_and_labels_prefix` (a metric name, or a
// name and the first labels, e.g. `steps_total{kind="eager"`), 0 when none does.
inline double MetricValue(const std::string& metrics, const std::string& name_and_labels_prefix) {
  double total = 0;
  std::istringstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name_and_labels_prefix, 0) == 0) total += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return total;
}

}  // namespace tessera::testing
