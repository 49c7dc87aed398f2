// CudaBackend's GPTQ matmul and multi-LoRA ops: argument checks, kernel choice (the int4
// tensor-core kernel on the repacked layout when the weight has one; otherwise the AutoGPTQ
// GEMV for decode batches and GEMM for prefill) and their device workspaces. The kernels
// are in cuda_int4.cu, cuda_gptq.cu and cuda_lora.cu.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_backend_impl.h"
#include "kernels/cuda/cuda_int4_launch.h"
#include "kernels/cuda/cuda_quant_launch.h"
#include "kernels/cuda/int4_layout.h"

namespace tessera {
namespace {

// Rows up to this count take the GEMV: it reads the weight once for up to 8 rows and
// splits K to fill the device, where a 64-row GEMM tile would be mostly padding.
constexpr int64_t kGemvMaxRows = 8;

}  // namespace

absl::StatusOr<DeviceBuffer> CudaBackend::PackQuantizedWeight(const QuantizedWeight& host, QuantizedWeight* dev) {
  if (!cuda::Int4LayoutSupported(host)) return DeviceBuffer();
  if (host.qweight == nullptr || host.qzeros == nullptr || host.scales == nullptr)
    return absl::InvalidArgumentError("cuda: packing a GPTQ weight needs its host qweight, qzeros and scales");
  const cuda::Int4Layout layout = cuda::Int4LayoutOf(host);
  std::vector<uint8_t> packed(layout.total_bytes());
  cuda::PackInt4Layout(host, layout, packed.data());
  auto buf = Allocate(packed.size());
  if (!buf.ok()) return buf.status();
  absl::Status st = CopyToDevice(buf->data(), packed.data(), packed.size());
  if (!st.ok()) return st;
  dev->packed = buf->data();
  return buf;
}

absl::Status CudaBackend::EnsureGptqWorkspace(size_t bytes) {
  const void* before = gptq_workspace_.data();
  absl::Status st = EnsureDevice(gptq_workspace_, bytes);
  if (!st.ok()) return st;
  // The split-K arrival counters start at zero and every launch leaves them at zero.
  if (gptq_workspace_.data() != before) {
    cudaError_t e = cudaMemsetAsync(gptq_workspace_.data(), 0, gptq_workspace_.bytes(), stream());
    if (e != cudaSuccess) return absl::InternalError(std::string("cuda: gptq workspace: ") + cudaGetErrorString(e));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::ReserveQuantizedMatmul(const std::vector<const QuantizedWeight*>& weights, int64_t rows) {
  size_t need = 0;
  for (const QuantizedWeight* q : weights) {
    if (q != nullptr && Int4TakesDenseGemm(*q, rows)) {
      need = std::max(need, static_cast<size_t>(q->out_features * q->in_features) * 2);
    }
  }
  return need > 0 ? EnsureDevice(int4_dense_, need, /*exact=*/true) : absl::OkStatus();
}

bool CudaBackend::Int4TakesDenseGemm(const QuantizedWeight& q, int64_t rows) const {
  return rows >= options_.int4_dense_min_rows && q.packed != nullptr;
}

void CudaBackend::PackedInt4Matmul(const TensorView& x, const QuantizedWeight& q, TensorView out) {
  const cuda::Int4Args w = cuda::Int4ArgsOf(q);
  if (Int4TakesDenseGemm(q, x.rows)) {
    // Many rows: the tensor cores at full rate over the dequantised weight, for the price of
    // one pass over it (int4 read, bf16 written), beat the int4 tile kernel.
    absl::Status st = EnsureDevice(int4_dense_, static_cast<size_t>(q.out_features * q.in_features) * 2);
    if (!st.ok()) return Fail(std::move(st));
    cuda::LaunchInt4Dequantize(w, int4_dense_.data(), stream());
    CheckLaunch("int4 dequantize");
    st = gemm_->Run(x.data, int4_dense_.data(), out.data, out.dtype, x.rows, q.in_features, q.out_features, stream());
    if (!st.ok()) Fail(std::move(st));
    return;
  }
  const bool x_direct = q.perm == nullptr && q.in_features % 8 == 0 && reinterpret_cast<uintptr_t>(x.data) % 16 == 0;
  const cuda::Int4Plan plan = cuda::PlanInt4Matmul(w, x.rows, x_direct, num_sms());
  if (plan.workspace_bytes > 0) {
    absl::Status st = EnsureGptqWorkspace(plan.workspace_bytes);
    if (!st.ok()) return Fail(std::move(st));
  }
  cuda::LaunchInt4Matmul(w, plan, x.data, x.rows, out.data, out.dtype, gptq_workspace_.data(), stream());
  CheckLaunch("int4 matmul");
}

bool CudaBackend::FusedSiluInt4Matmul(const TensorView& gate_up, const QuantizedWeight& q, TensorView out) {
  const int64_t rows = gate_up.rows, f = q.in_features;
  if (q.packed == nullptr || q.perm != nullptr || !cuda::Int4LayoutSupported(q) || f % 8 != 0 ||
      rows < 1 || rows > cuda::kInt4SiluFuseMaxRows || gate_up.dtype != DType::kBF16 || gate_up.cols != 2 * f ||
      reinterpret_cast<uintptr_t>(gate_up.data) % 16 != 0 || out.rows != rows || out.cols != q.out_features ||
      (out.dtype != DType::kBF16 && out.dtype != DType::kF32)) {
    return false;
  }
  const cuda::Int4Args w = cuda::Int4ArgsOf(q);
  const cuda::Int4Plan plan = cuda::PlanInt4Matmul(w, rows, /*x_direct=*/true, num_sms());
  if (!plan.decode || plan.gather) return false;
  if (plan.workspace_bytes > 0) {
    absl::Status st = EnsureGptqWorkspace(plan.workspace_bytes);
    if (!st.ok()) {
      Fail(std::move(st));
      return true;  // recorded: the caller must not run the op again
    }
  }
  cuda::LaunchInt4SiluMulMatmul(w, plan, gate_up.data, rows, out.data, out.dtype, gptq_workspace_.data(), stream());
  CheckLaunch("int4 silu_mul matmul");
  return true;
}

void CudaBackend::SiluMulMatmul(const TensorView& gate_up, TensorView act, const LinearWeight& w, TensorView out) {
  // The bf16 skinny GEMV stays unfused: its blocks cover a few weight rows each and read
  // x from L1 for every one, so forming the activations there would compute each silu
  // once per weight row instead of once per column tile.
  if (options_.fuse_silu_down && w.quant != nullptr && act.rows == gate_up.rows && act.cols == w.in_features() &&
      FusedSiluInt4Matmul(gate_up, *w.quant, out)) {
    return;
  }
  Backend::SiluMulMatmul(gate_up, act, w, out);
}

void CudaBackend::QuantizedMatmul(const TensorView& x, const QuantizedWeight& q, TensorView out) {
  if (q.packed != nullptr) {
    if (!Check(cuda::Int4LayoutSupported(q), "gptq matmul", "the packed weight's shape has no int4 kernel") ||
        !Check(x.dtype == DType::kBF16, "gptq matmul", "x must be bf16") ||
        !Check(out.dtype == DType::kBF16 || out.dtype == DType::kF32, "gptq matmul", "output must be bf16 or f32") ||
        !Check(x.cols == q.in_features && out.rows == x.rows && out.cols == q.out_features, "gptq matmul",
               "shape mismatch")) {
      return;
    }
    if (x.rows > 0) PackedInt4Matmul(x, q, out);
    return;
  }
  if (q.bits != 2 && q.bits != 4 && q.bits != 8) {
    Fail(absl::UnimplementedError(
        absl::StrCat("cuda matmul: ", q.bits, "-bit GPTQ weights have no CUDA kernel (2, 4 and 8 bits do)")));
    return;
  }
  const int64_t fields = 32 / q.bits;
  if (!Check(q.qweight != nullptr && q.qzeros != nullptr && q.scales != nullptr, "gptq matmul",
             "the quantized weight has no device data") ||
      !Check(q.group_size > 0 && q.in_features > 0 && q.out_features > 0, "gptq matmul",
             "group size and features must be positive") ||
      !Check(x.dtype == DType::kBF16, "gptq matmul", "x must be bf16") ||
      !Check(out.dtype == DType::kBF16 || out.dtype == DType::kF32, "gptq matmul", "output must be bf16 or f32") ||
      !Check(x.cols == q.in_features && out.rows == x.rows && out.cols == q.out_features, "gptq matmul",
             "shape mismatch")) {
    return;
  }
  if (q.group_size % fields != 0 && q.group_size < q.in_features) {
    Fail(absl::UnimplementedError(absl::StrCat("cuda matmul: GPTQ group size ", q.group_size,
                                               " splits a packed word of ", fields, " ", q.bits, "-bit fields")));
    return;
  }
  if (x.rows == 0) return;
  cuda::GptqArgs w;
  w.bits = q.bits;
  w.group_size = q.group_size;
  w.in_features = q.in_features;
  w.out_features = q.out_features;
  w.qweight = q.qweight;
  w.qzeros = q.qzeros;
  w.scales = q.scales;
  w.perm = q.perm;
  w.zeros_minus_one = q.zeros_minus_one;

  if (x.rows > kGemvMaxRows && cuda::GptqGemmSupported(w)) {
    cuda::LaunchGptqGemm(w, x.data, x.rows, out.data, out.dtype, stream());
    CheckLaunch("gptq gemm");
    return;
  }
  const cuda::GptqGemvPlan plan = cuda::PlanGptqGemv(w, x.rows, num_sms());
  if (!Check(plan.col_tiles <= cuda::kGptqGemvMaxColTiles, "gptq matmul", "more output features than the GEMV tiles")) {
    return;
  }
  if (plan.workspace_bytes > 0) {
    absl::Status st = EnsureGptqWorkspace(plan.workspace_bytes);
    if (!st.ok()) return Fail(std::move(st));
  }
  cuda::LaunchGptqGemv(w, plan, x.data, x.rows, out.data, out.dtype, gptq_workspace_.data(), stream());
  CheckLaunch("gptq gemv");
}

// The kernel arguments of one (layer, target) delta, or false when there is nothing to do
// (the module has never had an adapter) or the call is invalid (recorded).
bool CudaBackend::LoraArgsFor(const TensorView& x, const LoraBatch& lora, int layer, int target, TensorView out,
                              int64_t col_offset, cuda::LoraArgs* a) {
  const LoraSlotTables* tables = lora.tables;
  if (!Check(tables != nullptr && lora.token_slots != nullptr, "lora", "the batch has no slot tables or token slots") ||
      !Check(layer >= 0 && layer < tables->num_layers && target >= 0 && target < kNumLoraTargets, "lora",
             "no tables for this layer and target")) {
    return false;
  }
  const LoraModuleSlots& m = tables->module(layer, target);
  if (m.active != nullptr && *m.active == 0) return false;  // no adapter has touched this module yet
  if (!Check(tables->dtype == DType::kBF16 && x.dtype == DType::kBF16, "lora", "x and the slot tables must be bf16") ||
      !Check(out.dtype == DType::kBF16 || out.dtype == DType::kF32, "lora", "output must be bf16 or f32") ||
      !Check(m.a != nullptr && m.b_t != nullptr && m.ranks != nullptr, "lora", "the module has no slot tables")) {
    return false;
  }
  if (x.cols != m.in_features || x.rows != lora.num_tokens || out.rows != x.rows || col_offset < 0 ||
      col_offset + m.out_features > out.cols) {
    Fail(absl::InvalidArgumentError(absl::StrCat(
        "cuda lora layer ", layer, " target ", target, ": x [", x.rows, ", ", x.cols, "] and out [", out.rows, ", ",
        out.cols, "] at column ", col_offset, " do not fit A [", m.in_features, "] / B [", m.out_features, "] over ",
        lora.num_tokens, " tokens")));
    return false;
  }
  a->x = x.data;
  a->out = out.data;
  a->out_dtype = out.dtype;
  a->out_cols = out.cols;
  a->col_offset = col_offset;
  a->token_slots = lora.token_slots;
  a->num_tokens = lora.num_tokens;
  a->a = m.a;
  a->b_t = m.b_t;
  a->ranks = m.ranks;
  a->num_slots = tables->num_slots;
  a->max_rank = tables->max_rank;
  a->in_features = m.in_features;
  a->out_features = m.out_features;
  return a->num_tokens > 0 && a->max_rank > 0 && a->out_features > 0;
}

void CudaBackend::LoraApply(const TensorView& x, const LoraBatch& lora, int layer, int target, TensorView out,
                            int64_t col_offset) {
  const LoraTarget one{target, out, col_offset};
  LoraApplyGroup(x, lora, layer, std::span<const LoraTarget>(&one, 1));
}

void CudaBackend::LoraApplyGroup(const TensorView& x, const LoraBatch& lora, int layer,
                                 std::span<const LoraTarget> targets) {
  cuda::LoraGroupArgs g;
  for (const LoraTarget& t : targets) {
    if (g.count == cuda::kLoraMaxGroup) {  // a larger group goes in several launches
      LaunchLoraGroup(g);
      g.count = 0;
    }
    if (LoraArgsFor(x, lora, layer, t.target, t.out, t.col_offset, &g.m[g.count])) ++g.count;
  }
  if (g.count > 0) LaunchLoraGroup(g);
}

void CudaBackend::LaunchLoraGroup(const cuda::LoraGroupArgs& g) {
  const cuda::LoraPlan plan = cuda::PlanLoraApply(g, num_sms());
  const void* before = lora_workspace_.data();
  absl::Status st = EnsureDevice(lora_workspace_, plan.workspace_bytes);
  if (!st.ok()) return Fail(std::move(st));
  // The BGMV arrival counters start at zero and every launch leaves them at zero.
  if (lora_workspace_.data() != before) {
    cudaError_t e = cudaMemsetAsync(lora_workspace_.data(), 0, cuda::kLoraCounterBytes, stream());
    if (e != cudaSuccess) return Fail(absl::InternalError(std::string("cuda: lora workspace: ") + cudaGetErrorString(e)));
  }
  cuda::LaunchLoraApply(g, plan, lora_workspace_.data(), stream());
  CheckLaunch("lora");
}

}  // namespace tessera
