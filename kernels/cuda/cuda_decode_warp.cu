// Tensor-core paged decode attention with one warp per (kv head, sequence, context
// partition), for decode steps of many short sequences (serving): a CTA of four warps
// holds four kv heads of one sequence, each warp stages its own queries and block-table
// entries, streams all of its partition's 16-token sub-tiles through its own cp.async ring
// and writes its output itself, so no warp waits at a block barrier and a warp's stream is
// four times as long as in DecodeMmaKernel (cuda_decode_mma.cu), whose four warps share one
// partition and merge at the end. The warp policies are the same (cuda_decode_tiles.cuh,
// cuda_decode_token_rows.cuh). A context longer than one partition (kMaxPartitionSubs
// sub-tiles) is split, and the last partition's warp to finish merges them.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_decode_internal.h"
#include "kernels/cuda/cuda_decode_partials.cuh"
#include "kernels/cuda/cuda_decode_policy.cuh"
#include "kernels/cuda/cuda_mma.cuh"
#include "kernels/cuda/cuda_pdl.h"

namespace tessera::cuda {
namespace {

using decode::kRows;
using decode::kSub;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr float kLog2e = 1.4426950408889634f;

__host__ __device__ constexpr size_t RoundUp16(size_t x) { return (x + 15) / 16 * 16; }

// A warp's shared memory: its ring (then its O rows for the output), its staged queries
// (then the rows' max and sum), its block-table entries.
template <typename P>
struct WarpShape {
  static constexpr int D = P::kD;
  static constexpr int kMergeRow = D + 4;  // f32 per row of O
  static constexpr size_t kRingBytes = static_cast<size_t>(P::kStageBytes) * P::kStages;
  static constexpr size_t kOBytes = sizeof(float) * kRows * kMergeRow;
  static constexpr size_t kAreaBytes = RoundUp16(kRingBytes > kOBytes ? kRingBytes : kOBytes);
  static constexpr size_t kQBytes = RoundUp16(static_cast<size_t>(P::kQBytes) > 2 * kRows * sizeof(float)
                                                  ? static_cast<size_t>(P::kQBytes)
                                                  : 2 * kRows * sizeof(float));
  __host__ __device__ static size_t WarpBytes(int pages) { return kAreaBytes + kQBytes + RoundUp16(sizeof(int32_t) * pages); }
};

template <typename P>
__global__ void __launch_bounds__(kThreads, P::kMinBlocks)
    DecodeWarpKernel(AttentionArgs a, int splits, int page_cap, int min_subs, unsigned* counters, float* o_part,
                     float* ml_part) {
  using S = WarpShape<P>;
  constexpr int D = P::kD;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int kvh = blockIdx.x * kWarps + warp, seq = blockIdx.y;
  const int G = a.num_heads / a.num_kv_heads;
  // Before PdlWait as in DecodeMmaKernel: the batch's indices, the block table and the head
  // of the ring without the step's own token.
  PdlLaunchDependents();
  if (kvh >= a.num_kv_heads) return;
  const int t = a.query_start[seq];
  if (a.query_start[seq + 1] - t != 1) return;  // empty, or a prefill (its own kernel)
  const int own = a.positions[t];
  extern __shared__ uint4 smem_raw[];
  char* area = reinterpret_cast<char*>(smem_raw) + warp * S::WarpBytes(page_cap);
  char* qs = area + S::kAreaBytes;
  int32_t* pages = reinterpret_cast<int32_t*>(qs + S::kQBytes);
  const __nv_bfloat16* q = static_cast<const __nv_bfloat16*>(a.q) + static_cast<int64_t>(t) * a.q_stride +
                           static_cast<int64_t>(kvh) * G * D;
  const float qscale = a.scale * kLog2e;  // softmax in base 2

  for (int split = blockIdx.z; split < splits; split += gridDim.z) {
    int start, end, parts;
    Partition(own + 1, kSub, split, splits, min_subs, &start, &end, &parts);
    const bool direct = splits == 1 || (counters != nullptr && parts == 1);
    if (start >= end) {  // nothing of this sequence falls in this partition (nor in later ones)
      if (counters != nullptr) break;  // the merge reads only the non-empty ones
      PdlWait();
      WriteEmptyPartition<D>(a, seq, t, kvh, G, split, splits, o_part, ml_part, lane, 32);
      continue;
    }
    __syncwarp();  // a previous partition's output is read out of the warp's area
    const PartitionPages pp =
        StagePartitionPages(a.block_tables + static_cast<int64_t>(seq) * a.max_blocks_per_seq, a.block_size, start,
                            end, page_cap, pages, lane, 32);
    __syncwarp();
    // Every sub-tile of the partition, in order.
    const int n = (end - start + kSub - 1) / kSub;
    const int held_at = IssueRingHead<P>(area, a, kvh, pp, start, kSub, n, end, own, lane);
    PdlWait();
    IssueHeldRow<P>(area, a, kvh, pp, start, kSub, own, held_at, lane);
    P::StageQ(q, G, qs, lane, 32);
    __syncwarp();
    typename P::State st;
    P::Init(st, qs, lane);
    StreamSubTiles<P, true>(st, area, a, kvh, pp, start, kSub, n, end, qscale, held_at, lane);
    __syncwarp();  // the ring becomes the warp's O rows, the staged queries its (max, sum)

    float* mo = reinterpret_cast<float*>(area);  // [row][kMergeRow]
    float* mm = reinterpret_cast<float*>(qs);    // [row] max
    float* ml = mm + kRows;                      // [row] sum
    P::template WriteMerge<S::kMergeRow>(st, mo, mm, ml, lane);
    __syncwarp();
    for (int u = lane; u < G * D; u += 32) {
      const int r = u / D, d = u % D, h = kvh * G + r;
      const float v = mo[r * S::kMergeRow + d] * (1.0f / ml[r]);  // a non-empty partition has a positive sum
      if (direct) {
        static_cast<__nv_bfloat16*>(a.out)[static_cast<int64_t>(t) * a.out_stride + h * D + d] = __float2bfloat16(v);
      } else {
        const int64_t row = (static_cast<int64_t>(seq) * a.num_heads + h) * splits + split;
        o_part[row * D + d] = v;
        if (d == 0) {
          ml_part[row * 2] = mm[r];
          ml_part[row * 2 + 1] = ml[r];
        }
      }
    }
    if (direct || counters == nullptr) continue;

    // The last of the sequence's non-empty partitions to get here merges them all, then
    // re-arms the counter for the next launch.
    // Lane 0 arrives with release and acquire (AtomicAddAcqRel) between two warp barriers.
    __syncwarp();
    unsigned last = 0;
    if (lane == 0) {
      unsigned* counter = counters + static_cast<int64_t>(seq) * a.num_kv_heads + kvh;
      last = AtomicAddAcqRel(counter, 1u) == static_cast<unsigned>(parts - 1);
      if (last) *counter = 0;
    }
    if (__shfl_sync(0xffffffffu, last, 0) == 0) continue;
    __syncwarp();
    MergePartitions<D>(a, seq, t, kvh, G, splits, parts, o_part, ml_part, lane, 32);
  }
}

constexpr int kMaxPartitionSubs = 64;  // 1024 tokens per warp's partition at most

template <typename P>
int WarpBlocksPerSm() {
  // The limit for block size 1's partition; occupancy at block size 16's.
  static const int blocks =
      DecodeResidentBlocks(DecodeWarpKernel<P>, kThreads, kWarps * WarpShape<P>::WarpBytes(kMaxPartitionSubs * kSub + 2),
                           kWarps * WarpShape<P>::WarpBytes(kMaxPartitionSubs + 2));
  return blocks;
}

template <typename P>
void Launch(const AttentionArgs& a, const DecodePlan& plan, float* workspace, cudaStream_t stream) {
  WarpBlocksPerSm<P>();  // sets the kernel's shared-memory limit once
  const int page_cap = plan.partition_tokens / std::max(a.block_size, 1) + 2;
  const DecodePartials w = DecodePartialsOf(a, plan, P::kD, workspace);
  const dim3 grid((a.num_kv_heads + kWarps - 1) / kWarps, a.num_seqs, plan.grid_splits);
  const int min_subs = std::max(plan.min_partition_tokens / kSub, 1);
  LaunchPdl(DecodeWarpKernel<P>, grid, kThreads, kWarps * WarpShape<P>::WarpBytes(page_cap), stream, a, plan.splits,
            page_cap, min_subs, w.counters, w.o_part, w.ml_part);
  if (plan.splits > 1 && !plan.fused_merge) LaunchDecodeReduce(a, plan.splits, w.o_part, w.ml_part, stream);
}

}  // namespace

bool WarpDecodeSupported(const AttentionArgs& a) {
  return MmaDecodeSupported(a.head_dim) && a.num_kv_heads > 0 && a.num_kv_heads % kWarps == 0;
}

int WarpDecodeResidentCtas(const AttentionArgs& a, const DecodePlan& plan, int num_sms) {
  return std::max(num_sms, 1) * WithDecodePolicy(a, plan, [](auto p) { return WarpBlocksPerSm<decltype(p)>(); });
}

void PlanWarpDecode(const AttentionArgs& a, int num_sms, DecodePlan* plan) {
  plan->warp_items = true;
  const int64_t subs = std::max<int64_t>(1, (std::max(a.max_context_len, 1) + kSub - 1) / kSub);
  const int64_t splits = std::clamp<int64_t>((subs + kMaxPartitionSubs - 1) / kMaxPartitionSubs, 1, 1024);
  plan->splits = static_cast<int32_t>(splits);
  plan->min_partition_tokens = kMaxPartitionSubs * kSub;  // a sequence splits only past one full partition
  plan->partition_tokens = static_cast<int32_t>(std::min<int64_t>(subs, kMaxPartitionSubs) * kSub);
  plan->fused_merge = false;
  plan->workspace_bytes = 0;
  if (splits > 1) {
    plan->workspace_bytes = kDecodeCounterBytes +
                            sizeof(float) * static_cast<size_t>(a.num_seqs) * a.num_heads * splits * (a.head_dim + 2);
    plan->fused_merge = static_cast<int64_t>(a.num_seqs) * a.num_kv_heads <= kDecodeMergeCounters;
  }
  // As DecodeMmaKernel's grid: at most 32 waves of CTAs, each walking several partitions.
  const int64_t ctas = std::max<int64_t>(1, static_cast<int64_t>(a.num_seqs) * ((a.num_kv_heads + kWarps - 1) / kWarps));
  const int64_t cap = 32 * static_cast<int64_t>(WarpDecodeResidentCtas(a, *plan, num_sms));
  const int64_t fit = std::max<int64_t>(cap / ctas, 1);
  const int64_t per_cta = ctas * splits > cap ? (splits + fit - 1) / fit : 1;
  plan->grid_splits = static_cast<int32_t>((splits + per_cta - 1) / per_cta);
}

void LaunchWarpDecode(const AttentionArgs& a, const DecodePlan& plan, float* workspace, cudaStream_t stream) {
  WithDecodePolicy(a, plan, [&](auto p) { Launch<decltype(p)>(a, plan, workspace, stream); });
}

}  // namespace tessera::cuda
