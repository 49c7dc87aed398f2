// Runs a Llama model one decoder layer at a time on the CPU backend over a batch of
// calibration sequences, with f32 host weights that the quantizer may replace.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cpu/cpu_backend.h"
#include "runtime/model/config.h"

namespace tessera::quant {

struct HostLinear {
  int64_t out = 0, in = 0;
  std::vector<float> w;  // [out, in]
};

struct HostLayer {
  std::vector<float> input_norm, post_norm;
  HostLinear q, k, v, o, gate, up, down;
};

// The names of a layer's linears as they appear in checkpoints (without ".weight").
inline constexpr const char* kLinearNames[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                               "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                               "mlp.down_proj"};
HostLinear& LinearByName(HostLayer& layer, const std::string& name);

// The residual stream of num_seqs sequences of seq_len tokens: [num_seqs * seq_len, hidden].
struct Activations {
  int64_t num_seqs = 0, seq_len = 0;
  std::vector<float> x;
};

// Inputs of a layer's linears, captured while it runs: [tokens, in] each.
struct LayerTrace {
  std::vector<float> qkv_in, o_in, gate_up_in, down_in;
};

class LayerwiseRunner {
 public:
  // Reads config.json and the dense weights (any float dtype) of a Hugging Face directory.
  static absl::StatusOr<std::unique_ptr<LayerwiseRunner>> Load(const std::string& dir);

  const ModelConfig& config() const { return config_; }
  std::vector<HostLayer>& layers() { return layers_; }

  // Equal-length token sequences -> the embedded residual stream.
  absl::StatusOr<Activations> Embed(const std::vector<std::vector<int32_t>>& seqs) const;
  // Decoder layer l over `in` (its weights as they stand now); fills `trace` when given.
  Activations RunLayer(int64_t l, const Activations& in, LayerTrace* trace);
  // Final norm and LM head: float logits [tokens, vocab].
  std::vector<float> Logits(const Activations& x);

 private:
  LayerwiseRunner() = default;
  ModelConfig config_;
  CpuBackend backend_;
  std::vector<float> embed_, final_norm_, lm_head_;  // lm_head_ empty when tied
  std::vector<HostLayer> layers_;
};

}  // namespace tessera::quant
