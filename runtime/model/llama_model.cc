#include "runtime/model/llama_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <span>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"

namespace tessera {

absl::Status ModelLoadOptions::Validate() const {
  if (dtype != "auto" && dtype != "bfloat16" && dtype != "float16" && dtype != "float32")
    return absl::InvalidArgumentError(absl::StrCat("--dtype '", dtype, "': expected auto, bfloat16, float16 or float32"));
  return absl::OkStatus();
}

size_t PagedKvStorage::BytesPerBlock(const ModelConfig& c, int32_t block_size, DType dtype) {
  const size_t scale = dtype == DType::kF8E4M3 ? sizeof(float) : 0;
  return 2ull * c.num_hidden_layers * block_size * c.num_key_value_heads * (c.head_dim * DTypeSize(dtype) + scale);
}

absl::StatusOr<std::unique_ptr<PagedKvStorage>> PagedKvStorage::Create(Backend& backend, const ModelConfig& c,
                                                                       int32_t num_blocks, int32_t block_size,
                                                                       std::optional<DType> dtype) {
  if (num_blocks <= 0 || block_size <= 0)
    return absl::InvalidArgumentError("KV cache needs a positive number of blocks and block size");
  const DType dt = dtype.value_or(backend.activation_dtype());
  RETURN_IF_ERROR(backend.CheckKvCacheDType(dt, static_cast<int32_t>(c.head_dim)));
  auto kv = std::unique_ptr<PagedKvStorage>(new PagedKvStorage());
  kv->num_blocks_ = num_blocks;
  kv->block_size_ = block_size;
  kv->dtype_ = dt;
  const size_t slots = static_cast<size_t>(num_blocks) * block_size;
  const size_t per_layer = slots * c.num_key_value_heads * c.head_dim * DTypeSize(dt);
  const size_t scale_bytes = dt == DType::kF8E4M3 ? slots * c.num_key_value_heads * sizeof(float) : 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    KvLayerView view;
    for (int kv_half = 0; kv_half < 2; ++kv_half) {
      ASSIGN_OR_RETURN(DeviceBuffer b, backend.Allocate(per_layer));
      (kv_half == 0 ? view.k : view.v) = b.data();
      kv->buffers_.push_back(std::move(b));
      if (scale_bytes == 0) continue;
      ASSIGN_OR_RETURN(DeviceBuffer sb, backend.Allocate(scale_bytes));
      (kv_half == 0 ? view.k_scale : view.v_scale) = static_cast<float*>(sb.data());
      kv->buffers_.push_back(std::move(sb));
    }
    view.dtype = dt;
    view.num_blocks = num_blocks;
    view.block_size = block_size;
    view.num_kv_heads = static_cast<int32_t>(c.num_key_value_heads);
    view.head_dim = static_cast<int32_t>(c.head_dim);
    kv->layers_.push_back(view);
  }
  return kv;
}

LlamaModel::~LlamaModel() = default;

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& dir, Backend* backend,
                                                             const ModelLoadOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromFile(dir + "/config.json"));
  ASSIGN_OR_RETURN(auto store, WeightStore::Open(dir));
  auto model = std::unique_ptr<LlamaModel>(new LlamaModel());
  model->config_ = config;
  model->backend_ = backend;
  ASSIGN_OR_RETURN(model->gptq_, GptqConfig::FromModelDir(dir));
  if (options.dtype == "bfloat16") model->weight_dtype_ = DType::kBF16;
  else if (options.dtype == "float16") model->weight_dtype_ = DType::kF16;
  else if (options.dtype == "float32") model->weight_dtype_ = DType::kF32;
  else model->weight_dtype_ = backend->kind() == DeviceKind::kCpu ? DType::kF32 : DType::kBF16;
  if (backend->kind() != DeviceKind::kCpu && model->weight_dtype_ == DType::kF32)
    return absl::InvalidArgumentError("--dtype float32 is only supported on the CPU backend");
  // On the CPU, "auto" keeps each tensor's own float dtype so weights stay memory-mapped.
  const bool keep_source = backend->kind() == DeviceKind::kCpu && options.dtype == "auto";
  if (keep_source) {
    auto t = store->Get("model.embed_tokens.weight");
    if (t.ok()) model->weight_dtype_ = (*t)->dtype;
  }
  RETURN_IF_ERROR(model->LoadWeights(*store, options.stack_qkv));
  model->store_ = std::move(store);
  return model;
}

absl::StatusOr<TensorView> LlamaModel::Upload(const TensorInfo& t, DType dtype) {
  if (t.dtype != DType::kF32 && t.dtype != DType::kF16 && t.dtype != DType::kBF16)
    return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "' has dtype ",
                                                   std::string(DTypeName(t.dtype)), ", expected a float type"));
  const int64_t rows = t.shape.size() == 2 ? t.shape[0] : 1;
  const int64_t cols = t.shape.size() == 2 ? t.shape[1] : t.numel();
  weight_bytes_ += static_cast<size_t>(t.numel()) * DTypeSize(dtype);
  if (backend_->kind() == DeviceKind::kCpu && t.dtype == dtype) {
    return TensorView{const_cast<void*>(t.data), dtype, rows, cols};  // zero-copy from the mmap
  }
  std::vector<char> host;
  const void* src = t.data;
  if (t.dtype != dtype) {
    std::vector<float> f(t.numel());
    ConvertToF32(t.data, t.dtype, f.data(), f.size());
    host.resize(f.size() * DTypeSize(dtype));
    ConvertFromF32(f.data(), dtype, host.data(), f.size());
    src = host.data();
  }
  const size_t bytes = static_cast<size_t>(t.numel()) * DTypeSize(dtype);
  ASSIGN_OR_RETURN(DeviceBuffer buf, backend_->Allocate(bytes));
  RETURN_IF_ERROR(backend_->CopyToDevice(buf.data(), src, bytes));
  TensorView v{buf.data(), dtype, rows, cols};
  owned_.push_back(std::move(buf));
  return v;
}

absl::StatusOr<TensorView> LlamaModel::UploadConcatRows(const std::vector<const TensorInfo*>& parts, DType dtype) {
  const int64_t cols = parts.front()->shape[1];
  int64_t rows = 0;
  for (const TensorInfo* t : parts) rows += t->shape[0];
  std::vector<float> f(static_cast<size_t>(rows * cols));
  float* dst = f.data();
  for (const TensorInfo* t : parts) {
    ConvertToF32(t->data, t->dtype, dst, t->numel());
    dst += t->numel();
  }
  std::vector<char> host(f.size() * DTypeSize(dtype));
  ConvertFromF32(f.data(), dtype, host.data(), f.size());
  ASSIGN_OR_RETURN(DeviceBuffer buf, backend_->Allocate(host.size()));
  RETURN_IF_ERROR(backend_->CopyToDevice(buf.data(), host.data(), host.size()));
  weight_bytes_ += host.size();
  TensorView v{buf.data(), dtype, rows, cols};
  owned_.push_back(std::move(buf));
  return v;
}

absl::Status LlamaModel::LoadWeights(const WeightStore& store, bool stack_qkv) {
  store_.reset();
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, F = c.intermediate_size, D = c.head_dim;
  const int64_t qdim = c.num_attention_heads * D, kvdim = c.num_key_value_heads * D;
  const DType wd = weight_dtype_;
  ASSIGN_OR_RETURN(const TensorInfo* emb, store.Get("model.embed_tokens.weight", {c.vocab_size, H}));
  ASSIGN_OR_RETURN(embed_, Upload(*emb, wd));
  ASSIGN_OR_RETURN(const TensorInfo* fn, store.Get("model.norm.weight", {H}));
  ASSIGN_OR_RETURN(final_norm_, Upload(*fn, DType::kF32));
  if (c.tie_word_embeddings && !store.Contains("lm_head.weight")) {
    lm_head_ = embed_;
  } else {
    ASSIGN_OR_RETURN(const TensorInfo* head, store.Get("lm_head.weight", {c.vocab_size, H}));
    ASSIGN_OR_RETURN(lm_head_, Upload(*head, wd));
  }
  layers_.resize(c.num_hidden_layers);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    Layer& L = layers_[l];
    ASSIGN_OR_RETURN(const TensorInfo* in_norm, store.Get(p + "input_layernorm.weight", {H}));
    ASSIGN_OR_RETURN(const TensorInfo* post_norm, store.Get(p + "post_attention_layernorm.weight", {H}));
    ASSIGN_OR_RETURN(L.input_norm, Upload(*in_norm, DType::kF32));
    ASSIGN_OR_RETURN(L.post_norm, Upload(*post_norm, DType::kF32));
    if (gptq_) {
      RETURN_IF_ERROR(LoadGptqLayer(store, p, stack_qkv, L));
      continue;
    }
    ASSIGN_OR_RETURN(const TensorInfo* wq, store.Get(p + "self_attn.q_proj.weight", {qdim, H}));
    ASSIGN_OR_RETURN(const TensorInfo* wk, store.Get(p + "self_attn.k_proj.weight", {kvdim, H}));
    ASSIGN_OR_RETURN(const TensorInfo* wv, store.Get(p + "self_attn.v_proj.weight", {kvdim, H}));
    ASSIGN_OR_RETURN(const TensorInfo* wo, store.Get(p + "self_attn.o_proj.weight", {H, qdim}));
    ASSIGN_OR_RETURN(const TensorInfo* wg, store.Get(p + "mlp.gate_proj.weight", {F, H}));
    ASSIGN_OR_RETURN(const TensorInfo* wu, store.Get(p + "mlp.up_proj.weight", {F, H}));
    ASSIGN_OR_RETURN(const TensorInfo* wdn, store.Get(p + "mlp.down_proj.weight", {H, F}));
    if (stack_qkv) {
      ASSIGN_OR_RETURN(L.qkv.dense, UploadConcatRows({wq, wk, wv}, wd));
      L.fused_qkv = true;
    } else {
      ASSIGN_OR_RETURN(L.q.dense, Upload(*wq, wd));
      ASSIGN_OR_RETURN(L.k.dense, Upload(*wk, wd));
      ASSIGN_OR_RETURN(L.v.dense, Upload(*wv, wd));
    }
    ASSIGN_OR_RETURN(L.o.dense, Upload(*wo, wd));
    ASSIGN_OR_RETURN(L.gate_up.dense, UploadConcatRows({wg, wu}, wd));
    ASSIGN_OR_RETURN(L.down.dense, Upload(*wdn, wd));
  }
  return absl::OkStatus();
}

LinearWeight LlamaModel::AddQuantized(std::unique_ptr<GptqDeviceWeight> w) {
  LinearWeight lw;
  lw.quant = &w->weight();
  quantized_views_.push_back(lw.quant);
  weight_bytes_ += w->bytes();
  quantized_.push_back(std::move(w));
  return lw;
}

absl::Status LlamaModel::LoadGptqLayer(const WeightStore& store, const std::string& p, bool stack_qkv, Layer& L) {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, F = c.intermediate_size;
  const int64_t qdim = c.num_attention_heads * c.head_dim, kvdim = c.num_key_value_heads * c.head_dim;
  auto upload = [&](const GptqHostWeight& host, LinearWeight* dst) -> absl::Status {
    ASSIGN_OR_RETURN(auto dev, GptqDeviceWeight::Upload(*backend_, host));
    *dst = AddQuantized(std::move(dev));
    return absl::OkStatus();
  };
  ASSIGN_OR_RETURN(GptqHostWeight q, LoadGptqLinear(store, p + "self_attn.q_proj", H, qdim, *gptq_));
  ASSIGN_OR_RETURN(GptqHostWeight k, LoadGptqLinear(store, p + "self_attn.k_proj", H, kvdim, *gptq_));
  ASSIGN_OR_RETURN(GptqHostWeight v, LoadGptqLinear(store, p + "self_attn.v_proj", H, kvdim, *gptq_));
  // q, k and v share their input, so they stack into one product unless their act-order
  // input orders differ; then they stay three.
  absl::StatusOr<GptqHostWeight> qk =
      stack_qkv ? ConcatGptqOutFeatures(q, k) : absl::FailedPreconditionError("q/k/v stacking is off");
  absl::StatusOr<GptqHostWeight> qkv = qk.ok() ? ConcatGptqOutFeatures(*qk, v) : qk.status();
  if (qkv.ok()) {
    RETURN_IF_ERROR(upload(*qkv, &L.qkv));
    L.fused_qkv = true;
  } else {
    RETURN_IF_ERROR(upload(q, &L.q));
    RETURN_IF_ERROR(upload(k, &L.k));
    RETURN_IF_ERROR(upload(v, &L.v));
  }
  ASSIGN_OR_RETURN(GptqHostWeight o, LoadGptqLinear(store, p + "self_attn.o_proj", qdim, H, *gptq_));
  RETURN_IF_ERROR(upload(o, &L.o));
  ASSIGN_OR_RETURN(GptqHostWeight down, LoadGptqLinear(store, p + "mlp.down_proj", F, H, *gptq_));
  RETURN_IF_ERROR(upload(down, &L.down));
  ASSIGN_OR_RETURN(GptqHostWeight gate, LoadGptqLinear(store, p + "mlp.gate_proj", H, F, *gptq_));
  ASSIGN_OR_RETURN(GptqHostWeight up, LoadGptqLinear(store, p + "mlp.up_proj", H, F, *gptq_));
  auto gate_up = ConcatGptqOutFeatures(gate, up);
  if (!gate_up.ok())
    return absl::InvalidArgumentError(absl::StrCat(store.dir(), ": ", p, "mlp: ", gate_up.status().message()));
  ASSIGN_OR_RETURN(auto dev, GptqDeviceWeight::Upload(*backend_, *gate_up));
  L.gate_up = AddQuantized(std::move(dev));
  return absl::OkStatus();
}

absl::Status LlamaModel::EnsureWorkspace(int64_t tokens, int64_t logits) {
  const ModelConfig& c = config_;
  const DType ad = backend_->activation_dtype();
  const size_t es = DTypeSize(ad);
  if (tokens > ws_tokens_) {
    const int64_t T = std::max<int64_t>(tokens, 16);
    const int64_t qdim = c.num_attention_heads * c.head_dim, kvdim = c.num_key_value_heads * c.head_dim;
    ASSIGN_OR_RETURN(x_, backend_->Allocate(T * c.hidden_size * es));
    ASSIGN_OR_RETURN(residual_, backend_->Allocate(T * c.hidden_size * es));
    ASSIGN_OR_RETURN(h_, backend_->Allocate(T * c.hidden_size * es));
    // Layers with the stacked q/k/v product use qkv_; the others k_ and v_ (q_ serves both).
    const bool fused = std::any_of(layers_.begin(), layers_.end(), [](const Layer& L) { return L.fused_qkv; });
    const bool unfused = std::any_of(layers_.begin(), layers_.end(), [](const Layer& L) { return !L.fused_qkv; });
    qkv_ = DeviceBuffer();
    k_ = DeviceBuffer();
    v_ = DeviceBuffer();
    if (fused) {
      ASSIGN_OR_RETURN(qkv_, backend_->Allocate(T * (qdim + 2 * kvdim) * es));
    }
    ASSIGN_OR_RETURN(q_, backend_->Allocate(T * qdim * es));
    if (unfused) {
      ASSIGN_OR_RETURN(k_, backend_->Allocate(T * kvdim * es));
      ASSIGN_OR_RETURN(v_, backend_->Allocate(T * kvdim * es));
    }
    ASSIGN_OR_RETURN(attn_, backend_->Allocate(T * qdim * es));
    ASSIGN_OR_RETURN(gate_up_, backend_->Allocate(T * 2 * c.intermediate_size * es));
    ASSIGN_OR_RETURN(act_, backend_->Allocate(T * c.intermediate_size * es));
    ws_tokens_ = T;
    ++workspace_generation_;
  }
  if (logits > ws_logits_) {
    const int64_t N = std::max<int64_t>(logits, 8);
    ASSIGN_OR_RETURN(hidden_last_, backend_->Allocate(N * c.hidden_size * es));
    ASSIGN_OR_RETURN(logits_, backend_->Allocate(N * c.vocab_size * sizeof(float)));
    ws_logits_ = N;
    ++workspace_generation_;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> LlamaModel::Forward(const BatchLayout& layout, PagedKvStorage& kv) {
  ASSIGN_OR_RETURN(TensorView logits, ForwardLogits(layout, kv));
  std::vector<float> out(static_cast<size_t>(logits.numel()));
  if (out.empty()) return out;
  RETURN_IF_ERROR(backend_->CopyToHost(out.data(), logits.data, out.size() * sizeof(float)));
  RETURN_IF_ERROR(backend_->Synchronize());
  RETURN_IF_ERROR(backend_->TakeOpError());
  return out;
}

absl::Status LlamaModel::Reserve(int64_t tokens, int64_t logits, int64_t max_context_len) {
  const ModelConfig& c = config_;
  RETURN_IF_ERROR(EnsureWorkspace(tokens, logits));
  if (!quantized_views_.empty()) RETURN_IF_ERROR(backend_->ReserveQuantizedMatmul(quantized_views_, tokens));
  // Rotary frequencies: fixed unless dynamic scaling depends on the batch's length.
  const int64_t rope_len = rope_depends_on_batch() ? max_context_len : 0;
  if (inv_freq_len_ != rope_len || inv_freq_.data() == nullptr) {
    std::vector<float> inv = c.RopeInvFreq(rope_len);
    if (inv_freq_.data() == nullptr) {
      ASSIGN_OR_RETURN(inv_freq_, backend_->Allocate(inv.size() * sizeof(float)));
    }
    RETURN_IF_ERROR(backend_->CopyToDevice(inv_freq_.data(), inv.data(), inv.size() * sizeof(float)));
    inv_freq_len_ = rope_len;
  }
  return absl::OkStatus();
}

absl::StatusOr<TensorView> LlamaModel::ForwardLogits(const BatchLayout& layout, PagedKvStorage& kv) {
  const ModelConfig& c = config_;
  const int64_t T = layout.num_tokens();
  const int64_t N = static_cast<int64_t>(layout.logits_rows.size());
  if (T == 0) return TensorView{nullptr, DType::kF32, 0, c.vocab_size};
  for (int32_t id : layout.token_ids) {
    if (id < 0 || id >= c.vocab_size) return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is outside the vocabulary"));
  }
  if (!layout.lora_slots.empty() && lora_tables_ == nullptr)
    return absl::FailedPreconditionError("the batch uses LoRA adapters but the model has no adapter slot tables");
  RETURN_IF_ERROR(Reserve(T, N, layout.max_context_len()));
  ASSIGN_OR_RETURN(DeviceBatch db, backend_->UploadBatch(layout));
  TensorView logits = EnqueueForward(db, kv);
  RETURN_IF_ERROR(backend_->TakeOpError());  // ops that cannot run here (e.g. LoRA on a backend without it)
  return logits;
}

TensorView LlamaModel::EnqueueForward(const DeviceBatch& db, PagedKvStorage& kv) {
  const ModelConfig& c = config_;
  const int64_t T = db.num_tokens;
  const int64_t N = db.num_logits;
  Backend& b = *backend_;
  const DType ad = b.activation_dtype();
  const int64_t H = c.hidden_size, F = c.intermediate_size;
  const int64_t qdim = c.num_attention_heads * c.head_dim, kvdim = c.num_key_value_heads * c.head_dim;
  TensorView x = x_.View(ad, T, H), residual = residual_.View(ad, T, H), h = h_.View(ad, T, H);
  TensorView q = q_.View(ad, T, qdim), k = k_.View(ad, T, kvdim), v = v_.View(ad, T, kvdim);
  TensorView qkv = qkv_.View(ad, T, qdim + 2 * kvdim);
  TensorView attn = attn_.View(ad, T, qdim), gu = gate_up_.View(ad, T, 2 * F), act = act_.View(ad, T, F);
  AttentionParams ap;
  ap.num_heads = static_cast<int32_t>(c.num_attention_heads);
  ap.num_kv_heads = static_cast<int32_t>(c.num_key_value_heads);
  ap.head_dim = static_cast<int32_t>(c.head_dim);
  ap.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float* inv_freq = static_cast<const float*>(inv_freq_.data());
  // LoRA: after each adapted projection, out += its adapter delta for the tokens that have one.
  const LoraBatch lora{db.lora_slots, static_cast<int32_t>(T), lora_tables_};
  auto apply_lora = [&](const TensorView& in, size_t layer, int target, TensorView out, int64_t col) {
    if (db.lora_slots != nullptr) b.LoraApply(in, lora, static_cast<int>(layer), target, out, col);
  };
  // Targets that read the same input go together (one launch on CUDA).
  auto apply_lora_group = [&](const TensorView& in, size_t layer, std::initializer_list<Backend::LoraTarget> targets) {
    if (db.lora_slots != nullptr) {
      b.LoraApplyGroup(in, lora, static_cast<int>(layer), std::span<const Backend::LoraTarget>(targets.begin(), targets.size()));
    }
  };

  b.Embedding(embed_, db.token_ids, static_cast<int32_t>(T), residual);
  b.RmsNorm(residual, layers_[0].input_norm, eps, h);
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& L = layers_[l];
    if (l > 0) b.AddRmsNorm(x, residual, L.input_norm, eps, h);  // x holds the previous MLP output
    if (L.fused_qkv) {
      b.Matmul(h, L.qkv, qkv);
      apply_lora_group(h, l, {{kLoraQ, qkv, 0}, {kLoraK, qkv, qdim}, {kLoraV, qkv, qdim + kvdim}});
      b.RopeStoreKv(qkv, q, db.positions, inv_freq, ap.head_dim, db, kv.layer(static_cast<int>(l)));
    } else {
      b.Matmul(h, L.q, q);
      b.Matmul(h, L.k, k);
      b.Matmul(h, L.v, v);
      apply_lora_group(h, l, {{kLoraQ, q, 0}, {kLoraK, k, 0}, {kLoraV, v, 0}});
      b.Rope(q, k, db.positions, inv_freq, ap.head_dim);
      b.StoreKv(k, v, db, kv.layer(static_cast<int>(l)));
    }
    b.PagedAttention(q, db, kv.layer(static_cast<int>(l)), ap, attn);
    b.Matmul(attn, L.o, x);
    apply_lora(attn, l, kLoraO, x, 0);
    b.AddRmsNorm(x, residual, L.post_norm, eps, h);
    b.Matmul(h, L.gate_up, gu);
    apply_lora_group(h, l, {{kLoraGate, gu, 0}, {kLoraUp, gu, F}});
    if (db.lora_slots == nullptr) {
      b.SiluMulMatmul(gu, act, L.down, x);  // a backend may form act inside the down projection
    } else {
      b.SiluMul(gu, act);  // the down adapter reads act
      b.Matmul(act, L.down, x);
      apply_lora(act, l, kLoraDown, x, 0);
    }
  }
  TensorView logits = logits_.View(DType::kF32, N, c.vocab_size);
  if (N == 0) return logits;
  b.AddRmsNorm(x, residual, final_norm_, eps, h);
  TensorView last = hidden_last_.View(ad, N, H);
  b.GatherRows(h, db.logits_rows, static_cast<int32_t>(N), last);
  LinearWeight head;
  head.dense = lm_head_;
  b.Matmul(last, head, logits);
  return logits;
}

}  // namespace tessera
