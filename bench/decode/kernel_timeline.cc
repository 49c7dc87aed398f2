#include "bench/decode/kernel_timeline.h"

#include <algorithm>
#include <cstdio>
#include <map>

namespace tessera::bench {

KernelTimelineAccount AccountKernelTimeline(std::vector<KernelSpan> spans) {
  KernelTimelineAccount a;
  if (spans.empty()) return a;
  std::stable_sort(spans.begin(), spans.end(),
                   [](const KernelSpan& x, const KernelSpan& y) { return x.start_ns < y.start_ns; });
  std::map<std::string, KernelAccountRow> by_name;
  uint64_t frontier = spans.front().start_ns;
  for (const KernelSpan& s : spans) {
    const uint64_t end = std::max(s.end_ns, s.start_ns);
    if (s.start_ns > frontier) {
      a.gaps_ns += static_cast<double>(s.start_ns - frontier);
      frontier = s.start_ns;
    }
    KernelAccountRow& r = by_name[s.name];
    r.name = s.name;
    ++r.calls;
    r.duration_ns += static_cast<double>(end - s.start_ns);
    if (end > frontier) {
      r.advance_ns += static_cast<double>(end - frontier);
      frontier = end;
    }
  }
  a.span_ns = static_cast<double>(frontier - spans.front().start_ns);
  for (auto& [name, row] : by_name) a.rows.push_back(row);
  std::stable_sort(a.rows.begin(), a.rows.end(),
                   [](const KernelAccountRow& x, const KernelAccountRow& y) { return x.advance_ns > y.advance_ns; });
  return a;
}

KernelTimelineAccount AccountKernelSteps(std::vector<KernelSpan> spans, std::vector<uint64_t> step_starts) {
  std::sort(step_starts.begin(), step_starts.end());
  std::vector<std::vector<KernelSpan>> steps(std::max<size_t>(step_starts.size(), 1));
  for (KernelSpan& s : spans) {
    const auto after = std::upper_bound(step_starts.begin(), step_starts.end(), s.start_ns);
    const size_t i = after == step_starts.begin() ? 0 : static_cast<size_t>(after - step_starts.begin()) - 1;
    steps[i].push_back(std::move(s));
  }
  KernelTimelineAccount total;
  std::map<std::string, KernelAccountRow> by_name;
  for (auto& step : steps) {
    const KernelTimelineAccount a = AccountKernelTimeline(std::move(step));
    total.span_ns += a.span_ns;
    total.gaps_ns += a.gaps_ns;
    for (const KernelAccountRow& r : a.rows) {
      KernelAccountRow& t = by_name[r.name];
      t.name = r.name;
      t.calls += r.calls;
      t.duration_ns += r.duration_ns;
      t.advance_ns += r.advance_ns;
    }
  }
  for (auto& [name, row] : by_name) total.rows.push_back(row);
  std::stable_sort(total.rows.begin(), total.rows.end(),
                   [](const KernelAccountRow& x, const KernelAccountRow& y) { return x.advance_ns > y.advance_ns; });
  return total;
}

std::string FormatKernelTimeline(const KernelTimelineAccount& a, int steps) {
  const double per = steps > 0 ? 1e-3 / steps : 1e-3;  // ns -> us per step
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "%-64s %7s %12s %12s %7s\n", "kernel [grid] (per step)", "calls", "duration us",
                "advance us", "share");
  out += line;
  for (const KernelAccountRow& r : a.rows) {
    std::snprintf(line, sizeof line, "%-64.64s %7.1f %12.1f %12.1f %6.1f%%\n", r.name.c_str(),
                  static_cast<double>(r.calls) / std::max(steps, 1), r.duration_ns * per, r.advance_ns * per,
                  a.span_ns > 0 ? 100.0 * r.advance_ns / a.span_ns : 0.0);
    out += line;
  }
  std::snprintf(line, sizeof line, "%-64s %7s %12s %12.1f %6.1f%%\n", "(no kernel running)", "", "", a.gaps_ns * per,
                a.span_ns > 0 ? 100.0 * a.gaps_ns / a.span_ns : 0.0);
  out += line;
  std::snprintf(line, sizeof line, "%-64s %7s %12s %12.1f\n", "span", "", "", a.span_ns * per);
  out += line;
  return out;
}

std::string ShortKernelName(const std::string& demangled) {
  // Cut the argument list: the last top-level '(' (template arguments may hold parentheses
  // such as "(anonymous namespace)").
  std::string s = demangled;
  int depth = 0;
  size_t args = std::string::npos;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '<') ++depth;
    if (s[i] == '>') --depth;
    if (s[i] == '(' && depth == 0 && s.compare(i, 20, "(anonymous namespace") != 0) args = i;
  }
  if (args != std::string::npos) s = s.substr(0, args);
  // Drop the return type ("void ") and the namespaces before the last top-level "::".
  depth = 0;
  size_t name_start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '<') ++depth;
    if (s[i] == '>') --depth;
    if (depth == 0 && s[i] == ' ' && s.compare(i + 1, 9, "namespace") != 0) name_start = i + 1;
    if (depth == 0 && s[i] == ':' && i + 1 < s.size() && s[i + 1] == ':') name_start = i + 2;
  }
  return s.substr(name_start);
}

}  // namespace tessera::bench
