// Shared helpers of the CUDA micro-benchmarks: error checks, event timing (the median over
// repetitions, eager or of a captured graph) and the device-to-device copy bandwidth that
// every ratio is measured against.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/cuda_backend_impl.h"

#define CHECK_CUDA(expr)                                                                          \
  do {                                                                                            \
    cudaError_t _e = (expr);                                                                      \
    if (_e != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(_e)); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

namespace tessera::bench {

template <typename T>
T Must(absl::StatusOr<T> s) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(s).value();
}

inline void MustOk(const absl::Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    std::exit(1);
  }
}

// Median seconds per call of fn: `warmup` untimed calls, then `reps` timed repetitions of
// `calls` back-to-back calls each (several calls per event pair hide the event overhead).
template <typename Fn>
double MedianSeconds(cudaStream_t stream, int warmup, int reps, int calls, Fn fn) {
  for (int i = 0; i < warmup; ++i) fn();
  CHECK_CUDA(cudaStreamSynchronize(stream));
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  std::vector<double> t;
  for (int rep = 0; rep < reps; ++rep) {
    CHECK_CUDA(cudaEventRecord(a, stream));
    for (int i = 0; i < calls; ++i) fn();
    CHECK_CUDA(cudaEventRecord(b, stream));
    CHECK_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1e-3 / calls);
  }
  CHECK_CUDA(cudaEventDestroy(a));
  CHECK_CUDA(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Median seconds per call with the host out of the way: `calls` calls of fn are captured
// into one CUDA graph (after `warmup` eager calls, which settle plans and workspaces) and
// the graph is replayed, as the decode loop replays its step graphs. Eager timing counts
// the host's launch cost whenever it exceeds the kernel's; this counts GPU time only.
template <typename Fn>
double GraphMedianSeconds(cudaStream_t stream, int warmup, int reps, int calls, Fn fn) {
  for (int i = 0; i < warmup; ++i) fn();
  CHECK_CUDA(cudaStreamSynchronize(stream));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
  for (int i = 0; i < calls; ++i) fn();
  CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  const double t = MedianSeconds(stream, 2, reps, 1, [&] { CHECK_CUDA(cudaGraphLaunch(exec, stream)); });
  CHECK_CUDA(cudaGraphExecDestroy(exec));
  CHECK_CUDA(cudaGraphDestroy(graph));
  return t / calls;
}

// Case filter for profiling runs: the comma-separated list in environment variable `var`
// (absent or empty: every case). Selected(key) says whether `key` is in it.
class CaseFilter {
 public:
  explicit CaseFilter(const char* var) {
    const char* v = std::getenv(var);
    if (v != nullptr && *v != 0) list_ = std::string(",") + v + ",";
  }
  bool active() const { return !list_.empty(); }
  bool Selected(const std::string& key) const { return !active() || list_.find("," + key + ",") != std::string::npos; }

 private:
  std::string list_;
};

// Device-to-device copy bandwidth over `bytes`, counting bytes read and written, in GB/s.
inline double CopyBandwidthGbs(CudaBackend& be, size_t bytes) {
  DeviceBuffer a = Must(be.Allocate(bytes)), b = Must(be.Allocate(bytes));
  CHECK_CUDA(cudaMemsetAsync(a.data(), 0x3c, bytes, be.stream()));
  const double s = MedianSeconds(be.stream(), 3, 20, 1, [&] {
    CHECK_CUDA(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, be.stream()));
  });
  return 2.0 * static_cast<double>(bytes) / s / 1e9;
}

template <typename T>
DeviceBuffer Upload(CudaBackend& be, const std::vector<T>& host) {
  DeviceBuffer d = Must(be.Allocate(host.size() * sizeof(T)));
  MustOk(be.CopyToDevice(d.data(), host.data(), host.size() * sizeof(T)));
  return d;
}

}  // namespace tessera::bench
