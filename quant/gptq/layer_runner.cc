#include "quant/gptq/layer_runner.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"
#include "runtime/model/weights.h"

namespace tessera::quant {
namespace {

absl::StatusOr<std::vector<float>> ReadF32(const WeightStore& store, const std::string& name,
                                           const std::vector<int64_t>& shape) {
  ASSIGN_OR_RETURN(const TensorInfo* t, store.Get(name, shape));
  if (t->dtype != DType::kF32 && t->dtype != DType::kF16 && t->dtype != DType::kBF16)
    return absl::InvalidArgumentError(absl::StrCat(store.dir(), ": tensor '", name, "' is not a float tensor"));
  std::vector<float> v(static_cast<size_t>(t->numel()));
  ConvertToF32(t->data, t->dtype, v.data(), v.size());
  return v;
}

TensorView View(const std::vector<float>& v, int64_t rows, int64_t cols) {
  return TensorView{const_cast<float*>(v.data()), DType::kF32, rows, cols};
}

LinearWeight Linear(const HostLinear& l) {
  LinearWeight w;
  w.dense = View(l.w, l.out, l.in);
  return w;
}

}  // namespace

HostLinear& LinearByName(HostLayer& layer, const std::string& name) {
  if (name == "self_attn.q_proj") return layer.q;
  if (name == "self_attn.k_proj") return layer.k;
  if (name == "self_attn.v_proj") return layer.v;
  if (name == "self_attn.o_proj") return layer.o;
  if (name == "mlp.gate_proj") return layer.gate;
  if (name == "mlp.up_proj") return layer.up;
  return layer.down;
}

absl::StatusOr<std::unique_ptr<LayerwiseRunner>> LayerwiseRunner::Load(const std::string& dir) {
  ASSIGN_OR_RETURN(ModelConfig c, ModelConfig::FromFile(dir + "/config.json"));
  ASSIGN_OR_RETURN(auto store, WeightStore::Open(dir));
  auto r = std::unique_ptr<LayerwiseRunner>(new LayerwiseRunner());
  r->config_ = c;
  const int64_t H = c.hidden_size, F = c.intermediate_size;
  const int64_t qdim = c.num_attention_heads * c.head_dim, kvdim = c.num_key_value_heads * c.head_dim;
  ASSIGN_OR_RETURN(r->embed_, ReadF32(*store, "model.embed_tokens.weight", {c.vocab_size, H}));
  ASSIGN_OR_RETURN(r->final_norm_, ReadF32(*store, "model.norm.weight", {H}));
  if (!c.tie_word_embeddings || store->Contains("lm_head.weight")) {
    ASSIGN_OR_RETURN(r->lm_head_, ReadF32(*store, "lm_head.weight", {c.vocab_size, H}));
  }
  const std::pair<int64_t, int64_t> shapes[] = {{qdim, H}, {kvdim, H}, {kvdim, H}, {H, qdim},
                                                {F, H},    {F, H},     {H, F}};
  r->layers_.resize(c.num_hidden_layers);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    HostLayer& L = r->layers_[l];
    ASSIGN_OR_RETURN(L.input_norm, ReadF32(*store, p + "input_layernorm.weight", {H}));
    ASSIGN_OR_RETURN(L.post_norm, ReadF32(*store, p + "post_attention_layernorm.weight", {H}));
    for (int i = 0; i < 7; ++i) {
      HostLinear& lin = LinearByName(L, kLinearNames[i]);
      lin.out = shapes[i].first;
      lin.in = shapes[i].second;
      ASSIGN_OR_RETURN(lin.w, ReadF32(*store, p + kLinearNames[i] + ".weight", {lin.out, lin.in}));
    }
  }
  return r;
}

absl::StatusOr<Activations> LayerwiseRunner::Embed(const std::vector<std::vector<int32_t>>& seqs) const {
  Activations a;
  a.num_seqs = static_cast<int64_t>(seqs.size());
  a.seq_len = seqs.empty() ? 0 : static_cast<int64_t>(seqs[0].size());
  const int64_t H = config_.hidden_size;
  a.x.resize(static_cast<size_t>(a.num_seqs * a.seq_len * H));
  for (int64_t s = 0; s < a.num_seqs; ++s) {
    if (static_cast<int64_t>(seqs[s].size()) != a.seq_len)
      return absl::InvalidArgumentError("calibration sequences must all have the same length");
    for (int64_t t = 0; t < a.seq_len; ++t) {
      const int32_t id = seqs[s][t];
      if (id < 0 || id >= config_.vocab_size)
        return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is outside the vocabulary"));
      std::copy_n(embed_.begin() + id * H, H, a.x.begin() + (s * a.seq_len + t) * H);
    }
  }
  return a;
}

Activations LayerwiseRunner::RunLayer(int64_t l, const Activations& in, LayerTrace* trace) {
  const ModelConfig& c = config_;
  const HostLayer& L = layers_[l];
  const int64_t T = in.num_seqs * in.seq_len, H = c.hidden_size, F = c.intermediate_size;
  const int64_t qdim = c.num_attention_heads * c.head_dim, kvdim = c.num_key_value_heads * c.head_dim;
  const float eps = static_cast<float>(c.rms_norm_eps);
  Activations out = in;
  if (T == 0) return out;

  // One block per sequence: sequence s owns slots [s * seq_len, (s + 1) * seq_len).
  BatchLayout layout;
  layout.block_size = static_cast<int32_t>(in.seq_len);
  layout.max_blocks_per_seq = 1;
  layout.query_start.push_back(0);
  for (int64_t s = 0; s < in.num_seqs; ++s) {
    for (int64_t t = 0; t < in.seq_len; ++t) {
      layout.token_ids.push_back(0);
      layout.positions.push_back(static_cast<int32_t>(t));
      layout.slot_mapping.push_back(static_cast<int32_t>(s * in.seq_len + t));
    }
    layout.query_start.push_back(static_cast<int32_t>((s + 1) * in.seq_len));
    layout.context_lens.push_back(static_cast<int32_t>(in.seq_len));
    layout.block_tables.push_back(static_cast<int32_t>(s));
  }
  DeviceBatch db = *backend_.UploadBatch(layout);
  std::vector<float> kcache(static_cast<size_t>(T * kvdim)), vcache(kcache.size());
  KvLayerView kv{kcache.data(), vcache.data(), DType::kF32, static_cast<int32_t>(in.num_seqs),
                 static_cast<int32_t>(in.seq_len), static_cast<int32_t>(c.num_key_value_heads),
                 static_cast<int32_t>(c.head_dim)};
  AttentionParams ap;
  ap.num_heads = static_cast<int32_t>(c.num_attention_heads);
  ap.num_kv_heads = static_cast<int32_t>(c.num_key_value_heads);
  ap.head_dim = static_cast<int32_t>(c.head_dim);
  ap.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const std::vector<float> inv_freq = c.RopeInvFreq(in.seq_len);

  std::vector<float> h(T * H), q(T * qdim), k(T * kvdim), v(T * kvdim), attn(T * qdim), x(T * H);
  std::vector<float> gu(T * 2 * F), act(T * F);
  // Same op sequence as LlamaModel::Forward, so an unquantized run reproduces its logits.
  backend_.RmsNorm(View(out.x, T, H), View(L.input_norm, 1, H), eps, View(h, T, H));
  if (trace) trace->qkv_in = h;
  backend_.Matmul(View(h, T, H), Linear(L.q), View(q, T, qdim));
  backend_.Matmul(View(h, T, H), Linear(L.k), View(k, T, kvdim));
  backend_.Matmul(View(h, T, H), Linear(L.v), View(v, T, kvdim));
  backend_.Rope(View(q, T, qdim), View(k, T, kvdim), db.positions, inv_freq.data(), ap.head_dim);
  backend_.StoreKv(View(k, T, kvdim), View(v, T, kvdim), db, kv);
  backend_.PagedAttention(View(q, T, qdim), db, kv, ap, View(attn, T, qdim));
  backend_.Matmul(View(attn, T, qdim), Linear(L.o), View(x, T, H));
  backend_.AddRmsNorm(View(x, T, H), View(out.x, T, H), View(L.post_norm, 1, H), eps, View(h, T, H));
  if (trace) trace->gate_up_in = h;
  // gate_up holds gate then up per row, as SiluMul expects.
  std::vector<float> g(T * F), u(T * F);
  backend_.Matmul(View(h, T, H), Linear(L.gate), View(g, T, F));
  backend_.Matmul(View(h, T, H), Linear(L.up), View(u, T, F));
  for (int64_t t = 0; t < T; ++t) {
    std::copy_n(g.begin() + t * F, F, gu.begin() + t * 2 * F);
    std::copy_n(u.begin() + t * F, F, gu.begin() + t * 2 * F + F);
  }
  backend_.SiluMul(View(gu, T, 2 * F), View(act, T, F));
  backend_.Matmul(View(act, T, F), Linear(L.down), View(x, T, H));
  backend_.Add(View(x, T, H), View(out.x, T, H));
  if (trace) {
    trace->o_in = std::move(attn);
    trace->down_in = std::move(act);
  }
  return out;
}

std::vector<float> LayerwiseRunner::Logits(const Activations& a) {
  const ModelConfig& c = config_;
  const int64_t T = a.num_seqs * a.seq_len, H = c.hidden_size;
  std::vector<float> h(T * H), logits(T * c.vocab_size);
  backend_.RmsNorm(View(a.x, T, H), View(final_norm_, 1, H), static_cast<float>(c.rms_norm_eps), View(h, T, H));
  LinearWeight head;
  head.dense = View(lm_head_.empty() ? embed_ : lm_head_, c.vocab_size, H);
  backend_.Matmul(View(h, T, H), head, View(logits, T, c.vocab_size));
  return logits;
}

}  // namespace tessera::quant
