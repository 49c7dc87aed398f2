// Where a step's device time goes when kernels overlap (programmatic launches start a kernel
// before the previous one ends): each kernel is charged only for how far it moves the step's
// end forward, and the time no kernel covers is the launch gaps.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::bench {

struct KernelSpan {
  std::string name;
  uint64_t start_ns = 0, end_ns = 0;
};

struct KernelAccountRow {
  std::string name;
  int calls = 0;
  double duration_ns = 0;  // summed start-to-end times (overlapping ones count in full)
  double advance_ns = 0;   // summed time by which each call moved the frontier of ended work
};

struct KernelTimelineAccount {
  double span_ns = 0;  // first start to last end
  double gaps_ns = 0;  // no kernel running
  std::vector<KernelAccountRow> rows;  // by advance, largest first
};

// Spans in any order; sorted by start, each call's advance is end - max(frontier, start)
// (zero when it ends inside work already done) and a gap is a start past the frontier, so
// the advances and gaps add up to the span.
KernelTimelineAccount AccountKernelTimeline(std::vector<KernelSpan> spans);

// The account of several steps, summed: a span belongs to the last step whose start (same
// clock) is at or before its own start; each step's span runs from its first kernel's start to
// its last end, so the host time between steps is left out.
KernelTimelineAccount AccountKernelSteps(std::vector<KernelSpan> spans, std::vector<uint64_t> step_starts);

// A table: name, calls, summed duration, advance and its share of the span, then the gaps.
std::string FormatKernelTimeline(const KernelTimelineAccount& a, int steps);

// A kernel's readable name: the demangled signature without its argument list and return type
// ("void ns::(anonymous namespace)::Kernel<1, 2>(Args)" -> "Kernel<1, 2>").
std::string ShortKernelName(const std::string& demangled);

}  // namespace tessera::bench
