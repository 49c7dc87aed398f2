// Tensor-core split-K paged decode attention for head dims 32, 64 and 128. One CTA per (kv
// head, sequence, context partition). Each of its four warps walks its own 16-token
// sub-tiles of the partition through a private cp.async ring, with no block-wide barrier
// in the loop, and runs a warp policy on each: an online-softmax step with mma.sync
// m16n8k16 (cuda_decode_tiles.cuh: HeadRows, the GQA group's query heads as the 16 rows,
// over a bf16 or E4M3 cache; cuda_decode_token_rows.cuh: Fp8TokenRows, tokens as rows and
// up to 8 query heads as columns, E4M3). The warps' (max, sum, O) are merged once at the
// end, and the partitions by the last of them to finish (or by LaunchDecodeReduce when
// there are too many sequences to count). Partitions adapt to each sequence's own length,
// so a plan made for the longest context (as captured decode graphs use) still spreads a
// short sequence over several CTAs.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_decode_internal.h"
#include "kernels/cuda/cuda_decode_partials.cuh"
#include "kernels/cuda/cuda_decode_policy.cuh"
#include "kernels/cuda/cuda_decode_tiles.cuh"
#include "kernels/cuda/cuda_decode_token_rows.cuh"
#include "kernels/cuda/cuda_mma.cuh"
#include "kernels/cuda/cuda_pdl.h"

namespace tessera::cuda {
namespace {

using decode::kRows;
using decode::kSub;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr int kMaxStagedPages = 1024;
constexpr int kMaxPartitionSubs = 64;  // 1024 tokens: enough partitions to balance long contexts

template <typename P>
struct Shape {
  static constexpr int D = P::kD;
  static constexpr int kMergeRow = D + 4;  // f32 per row of a warp's O in the merge
  static constexpr size_t kPipeBytes = static_cast<size_t>(P::kStageBytes) * P::kStages * kWarps;
  static constexpr size_t kMergeBytes = sizeof(float) * kWarps * kRows * (kMergeRow + 2) + sizeof(float) * kRows * kWarps;
  static constexpr size_t kQOffset = kPipeBytes > kMergeBytes ? kPipeBytes : kMergeBytes;
  static constexpr size_t kPagesOffset = kQOffset + P::kQBytes;
  static size_t SmemBytes(int pages) { return kPagesOffset + sizeof(int32_t) * static_cast<size_t>(pages); }
};

template <typename P, bool kEarly>
__global__ void __launch_bounds__(kThreads, P::kMinBlocks)
    DecodeMmaKernel(AttentionArgs a, int splits, int page_cap, int min_subs, unsigned* counters, float* o_part,
                    float* ml_part) {
  using S = Shape<P>;
  constexpr int D = P::kD;
  constexpr int kStages = P::kStages;
  const int kvh = blockIdx.x, seq = blockIdx.y;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int G = a.num_heads / a.num_kv_heads;
  __shared__ bool merge;
  // kEarly: the batch's indices and the cache of earlier steps are read before PdlWait (so
  // the block-table staging and the first sub-tiles' copies overlap the previous kernel); the
  // queries, the step's own token (`own`, stored by the previous kernel) and the workspace
  // after it. Otherwise everything after it.
  PdlLaunchDependents();
  if constexpr (!kEarly) PdlWait();
  const int t = a.query_start[seq];
  if (a.query_start[seq + 1] - t != 1) return;  // empty, or a prefill (its own kernel)
  const int own = a.positions[t];
  // A CTA walks partitions blockIdx.z, blockIdx.z + gridDim.z, ...
  for (int split = blockIdx.z; split < splits; split += gridDim.z) {
    if (split != static_cast<int>(blockIdx.z)) __syncthreads();  // the previous merge is done with smem
    int start, end, parts;
    Partition(own + 1, kSub, split, splits, min_subs, &start, &end, &parts);
    // One non-empty partition writes the output itself; several meet through the workspace.
    const bool direct = splits == 1 || (counters != nullptr && parts == 1);

    if (start >= end) {  // nothing of this sequence falls in this partition (nor in later ones)
      if (counters != nullptr) break;  // the merge reads only the non-empty ones
      if constexpr (kEarly) PdlWait();
      WriteEmptyPartition<D>(a, seq, t, kvh, G, split, splits, o_part, ml_part, tid, kThreads);
      continue;
    }

    extern __shared__ uint4 smem_raw[];
    char* base = reinterpret_cast<char*>(smem_raw);
    char* qs = base + S::kQOffset;
    int32_t* pages = reinterpret_cast<int32_t*>(base + S::kPagesOffset);

    // The group's query rows (zeros past the group: with the pages, or once the previous
    // kernel is done), the partition's block-table entries, then the head of each warp's
    // ring: its sub-tiles are warp, warp + 4, ... of the partition, copied straight into it.
    const __nv_bfloat16* q = static_cast<const __nv_bfloat16*>(a.q) + static_cast<int64_t>(t) * a.q_stride +
                             static_cast<int64_t>(kvh) * G * D;
    if constexpr (!kEarly) P::StageQ(q, G, qs, tid, kThreads);
    const PartitionPages pp =
        StagePartitionPages(a.block_tables + static_cast<int64_t>(seq) * a.max_blocks_per_seq, a.block_size, start,
                            end, page_cap, pages, tid, kThreads);
    __syncthreads();
    const int n_sub = (end - start + kSub - 1) / kSub;
    const int my_n = warp < n_sub ? (n_sub - warp + kWarps - 1) / kWarps : 0;
    char* ring = base + static_cast<size_t>(warp) * kStages * P::kStageBytes;
    const int tok0 = start + warp * kSub, tok_step = kWarps * kSub;
    const int held_at = IssueRingHead<P>(ring, a, kvh, pp, tok0, tok_step, my_n, end, kEarly ? own : -1, lane);
    if constexpr (kEarly) {
      PdlWait();
      IssueHeldRow<P>(ring, a, kvh, pp, tok0, tok_step, own, held_at, lane);  // asynchronous: first
      P::StageQ(q, G, qs, tid, kThreads);
      __syncthreads();
    }

    typename P::State st;
    P::Init(st, qs, lane);
    const float qscale = a.scale * kLog2e;  // softmax in base 2
    StreamSubTiles<P, kEarly>(st, ring, a, kvh, pp, tok0, tok_step, my_n, end, qscale, held_at, lane);
    __syncthreads();  // every warp is done with the ring: it becomes the merge area

    // Merge the warps: row weights 2^(m_w - M) / L with M the largest max and L the summed
    // sums; a warp without sub-tiles has max -inf and weight 0.
    float* mo = reinterpret_cast<float*>(base);                    // [warp][row][kMergeRow]
    float* mm = mo + kWarps * kRows * S::kMergeRow;                // [warp][row] max
    float* ml = mm + kWarps * kRows;                               // [warp][row] sum
    float* wt = ml + kWarps * kRows;                               // [row][warp] weight
    P::template WriteMerge<S::kMergeRow>(st, mo + warp * kRows * S::kMergeRow, mm + warp * kRows, ml + warp * kRows,
                                         lane);
    __syncthreads();
    if (tid < G) {
      float m = -INFINITY;
  #pragma unroll
      for (int w = 0; w < kWarps; ++w) m = fmaxf(m, mm[w * kRows + tid]);
      float l = 0.0f, f[kWarps];
  #pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        f[w] = exp2f(mm[w * kRows + tid] - m);
        l += f[w] * ml[w * kRows + tid];
      }
  #pragma unroll
      for (int w = 0; w < kWarps; ++w) wt[tid * kWarps + w] = f[w] / l;
      if (!direct) {
        const int64_t row = (static_cast<int64_t>(seq) * a.num_heads + kvh * G + tid) * splits + split;
        ml_part[row * 2] = m;
        ml_part[row * 2 + 1] = l;
      }
    }
    __syncthreads();
    for (int u = tid; u < G * D; u += kThreads) {
      const int r = u / D, d = u % D;
      float v = 0.0f;
  #pragma unroll
      for (int w = 0; w < kWarps; ++w) v += wt[r * kWarps + w] * mo[(w * kRows + r) * S::kMergeRow + d];
      const int h = kvh * G + r;
      if (direct) {
        static_cast<__nv_bfloat16*>(a.out)[static_cast<int64_t>(t) * a.out_stride + h * D + d] = __float2bfloat16(v);
      } else {
        o_part[((static_cast<int64_t>(seq) * a.num_heads + h) * splits + split) * D + d] = v;
      }
    }
    if (direct || counters == nullptr) continue;

    // The last of the sequence's non-empty partitions to get here merges them all (weights
    // sum_i * 2^(max_i - max)), then re-arms the counter for the next launch. One thread
    // arrives, with release and acquire (AtomicAddAcqRel), between two barriers.
    __syncthreads();
    if (tid == 0) {
      unsigned* counter = counters + static_cast<int64_t>(seq) * a.num_kv_heads + kvh;
      merge = AtomicAddAcqRel(counter, 1u) == static_cast<unsigned>(parts - 1);
      if (merge) *counter = 0;
    }
    __syncthreads();
    if (!merge) continue;
    // Every warp is past its ring and the warps' merge area, which precede the queries.
    MergePartitionsBlock<D, (P::kMinBlocks < 4)>(a, seq, t, kvh, G, splits, parts, o_part, ml_part, tid, kThreads,
                            reinterpret_cast<float*>(base), S::kQOffset);
  }
}

template <typename P>
int BlocksPerSm() {
  // Typical partitions stage few pages; count occupancy at a 1 KiB page table (the same for
  // both forms, whose limit is set here too).
  static const int blocks = [] {
    DecodeResidentBlocks(DecodeMmaKernel<P, false>, kThreads, Shape<P>::SmemBytes(kMaxStagedPages),
                         Shape<P>::SmemBytes(256));
    return DecodeResidentBlocks(DecodeMmaKernel<P, true>, kThreads, Shape<P>::SmemBytes(kMaxStagedPages),
                                Shape<P>::SmemBytes(256));
  }();
  return blocks;
}

template <typename P>
void Launch(const AttentionArgs& a, const DecodePlan& plan, float* workspace, cudaStream_t stream) {
  constexpr int D = P::kD;
  BlocksPerSm<P>();  // sets the kernel's shared-memory limit once
  const int page_cap = std::min(plan.partition_tokens / std::max(a.block_size, 1) + 2, kMaxStagedPages);
  const DecodePartials w = DecodePartialsOf(a, plan, D, workspace);
  const dim3 grid(a.num_kv_heads, a.num_seqs, plan.grid_splits);
  const int min_subs = std::max(plan.min_partition_tokens / kSub, 1);
  LaunchPdl(plan.early_stream ? DecodeMmaKernel<P, true> : DecodeMmaKernel<P, false>, grid, kThreads,
            Shape<P>::SmemBytes(page_cap), stream, a, plan.splits, page_cap, min_subs, w.counters, w.o_part,
            w.ml_part);
  if (plan.splits > 1 && !plan.fused_merge) LaunchDecodeReduce(a, plan.splits, w.o_part, w.ml_part, stream);
}

int BlocksPerSmFor(const AttentionArgs& a, const DecodePlan& plan) {
  return WithDecodePolicy(a, plan, [](auto p) { return BlocksPerSm<decltype(p)>(); });
}

}  // namespace

bool MmaDecodeSupported(int32_t head_dim) { return head_dim == 32 || head_dim == 64 || head_dim == 128; }

bool TokenRowsSupported(const AttentionArgs& a) {
  return a.kv_fp8 && a.num_kv_heads > 0 && a.num_heads / a.num_kv_heads <= decode::Fp8TokenRows<128, 2>::kMaxGroup;
}

DecodePlan PlanMmaDecode(const AttentionArgs& a, int num_sms, const DecodePlan* layout) {
  DecodePlan plan;
  const int64_t ctas = std::max<int64_t>(1, static_cast<int64_t>(a.num_seqs) * a.num_kv_heads);
  // FP8 caches with groups of up to 8 query heads take the transposed products (fewer mma
  // and registers). Their ring is 3 sub-tiles deep (3 CTAs per multiprocessor) when one
  // CTA per (sequence, kv head) fills that many, else 2 (4 CTAs, so a small grid spreads
  // wider): the faster of the two in each of the H100 cases measured (bench/results/
  // decode_attention_layouts_h100.txt).
  plan.token_rows = TokenRowsSupported(a) && (layout == nullptr || layout->token_rows);
  plan.ring_stages = 3;
  if (plan.token_rows) {
    const int64_t deep_resident = static_cast<int64_t>(std::max(num_sms, 1)) * BlocksPerSmFor(a, plan);
    plan.ring_stages = layout != nullptr ? (layout->ring_stages == 3 ? 3 : 2) : (ctas >= deep_resident ? 3 : 2);
  }
  // Grids of at least a wave of four-warp CTAs even with one warp per (sequence, kv head)
  // take DecodeWarpKernel (cuda_decode_warp.cu) over FP8 caches, with a ring of 2 (4 CTAs
  // per multiprocessor).
  if (WarpDecodeSupported(a) && (layout != nullptr ? layout->warp_items : plan.token_rows)) {
    DecodePlan warp = plan;
    if (layout == nullptr) warp.ring_stages = 2;
    if (layout != nullptr || ctas >= static_cast<int64_t>(kWarps) * WarpDecodeResidentCtas(a, warp, num_sms)) {
      PlanWarpDecode(a, num_sms, &warp);
      return warp;
    }
  }
  const int64_t subs = std::max<int64_t>(1, (std::max(a.max_context_len, 1) + kSub - 1) / kSub);
  // One wave of resident CTAs at least, partitions of at most kMaxPartitionSubs sub-tiles
  // (so long contexts balance across waves) and at least one sub-tile per warp.
  const int64_t resident = static_cast<int64_t>(std::max(num_sms, 1)) * BlocksPerSmFor(a, plan);
  const int64_t need = (subs + kMaxPartitionSubs - 1) / kMaxPartitionSubs;
  int64_t most = std::clamp<int64_t>(
      std::min(std::max((resident + ctas - 1) / ctas, need), (subs + kWarps - 1) / kWarps), 1, 1024);
  // A grid of very few (sequence, kv head) pairs (batch 1 of a GQA model: 8) pays each
  // partition's fixed costs (staging its queries and pages, its share of the merge) more than
  // it gains from spreading over every multiprocessor: H100 sweeps of the split count put the
  // best at 8 up to 4k context and at partitions of about 512 tokens beyond (batch 1, 8 kv
  // heads, 4k: 8 splits 16.1 us against 19.2 at 33, FP8 15.5 against 25.5;
  // bench/results/decode_attention_splits_h100.txt).
  if (ctas * 8 < num_sms) most = std::min(most, std::max<int64_t>(8, subs / 32));
  // Rounding a wave up can spill a few CTAs into a second wave that costs as much as the
  // first (batch 1, 32 kv heads, two CTAs per multiprocessor: 9 splits are 288 CTAs for 264
  // slots). Take the split count from half that one up to it with the least waves x
  // partition length (ties: the most splits).
  int64_t splits = most, best = -1;
  for (int64_t s = std::max(std::min(need, most), most / 2); s <= most; ++s) {
    const int64_t cost = ((ctas * s + resident - 1) / resident) * ((subs + s - 1) / s);
    if (best < 0 || cost <= best) {
      best = cost;
      splits = s;
    }
  }
  plan.splits = static_cast<int32_t>(splits);
  // A grid of one CTA per (sequence, kv head) that already fills the machine splits only
  // long sequences; a small one spreads even short sequences over its partitions.
  const int64_t min_subs = ctas >= resident ? kMaxPartitionSubs : kWarps;
  plan.min_partition_tokens = static_cast<int32_t>(min_subs * kSub);
  // The longest partition any sequence gets: that of max_context_len, or one of up to
  // min_subs sub-tiles when a shorter sequence uses fewer partitions.
  const int64_t per = std::max((subs + splits - 1) / splits, std::min(min_subs, subs));
  plan.partition_tokens = static_cast<int32_t>(per * kSub);
  if (plan.splits > 1) {
    plan.workspace_bytes = kDecodeCounterBytes +
                           sizeof(float) * static_cast<size_t>(a.num_seqs) * a.num_heads * plan.splits * (a.head_dim + 2);
    plan.fused_merge = ctas <= kDecodeMergeCounters;
  }
  // A grid many waves deep walks several partitions per CTA instead: captured graphs plan
  // for max_model_len, and the CTAs of short sequences' empty partitions would each still
  // cost a scheduling slot.
  const int64_t cap = 32 * resident;
  const int64_t fit = std::max<int64_t>(cap / ctas, 1);  // CTAs per (sequence, kv head) within the cap
  const int64_t per_cta = ctas * splits > cap ? (splits + fit - 1) / fit : 1;
  plan.grid_splits = static_cast<int32_t>((splits + per_cta - 1) / per_cta);
  // Starting the stream before the previous kernel ends pays where the first wave is much of
  // the grid (H100, same call: batch 1 of 32 kv heads at 4k 30.3 against 26.6 us, batch 64 at
  // 256 tokens, 7.8 waves, 100.7 against 95.4) and is level or slower in deep grids of short
  // partitions (batch 512 at 128 tokens, 31 waves: 426 against 412 us), which start from
  // PdlWait (bench/results/decode_attention_early_stream_h100.txt).
  plan.early_stream = ctas * plan.grid_splits <= 8 * resident;
  return plan;
}

void LaunchMmaDecode(const AttentionArgs& a, const DecodePlan& plan, float* workspace, cudaStream_t stream) {
  if (!MmaDecodeSupported(a.head_dim)) return;
  if (plan.warp_items) return LaunchWarpDecode(a, plan, workspace, stream);
  WithDecodePolicy(a, plan, [&](auto p) { Launch<decltype(p)>(a, plan, workspace, stream); });
}

}  // namespace tessera::cuda
