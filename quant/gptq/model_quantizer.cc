#include "quant/gptq/model_quantizer.h"

#include <chrono>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "quant/gptq/checkpoint_writer.h"
#include "quant/gptq/layer_runner.h"
#include "runtime/common/status_macros.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tessera::quant {
namespace {

absl::StatusOr<std::vector<std::vector<int32_t>>> CalibrationWindows(const ModelQuantizeOptions& o) {
  std::ifstream in(o.calib_file);
  if (!in) return absl::NotFoundError(absl::StrCat(o.calib_file, ": cannot open calibration text"));
  std::stringstream ss;
  ss << in.rdbuf();
  ASSIGN_OR_RETURN(auto tokenizer, LoadTokenizer(o.model_dir));
  const std::vector<int32_t> tokens = tokenizer->Encode(ss.str(), false);
  const int64_t body = o.seqlen - 1;
  if (static_cast<int64_t>(tokens.size()) < body)
    return absl::InvalidArgumentError(absl::StrCat(o.calib_file, ": ", tokens.size(), " tokens, fewer than --seqlen ",
                                                   o.seqlen, " needs"));
  // Random windows of the text, each behind BOS as the model sees a document start.
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int64_t> start(0, static_cast<int64_t>(tokens.size()) - body);
  std::vector<std::vector<int32_t>> windows;
  for (int64_t s = 0; s < o.nsamples; ++s) {
    const int64_t b = start(rng);
    std::vector<int32_t> w = {tokenizer->bos_id()};
    w.insert(w.end(), tokens.begin() + b, tokens.begin() + b + body);
    windows.push_back(std::move(w));
  }
  return windows;
}

double UpdateError(const Activations& in, const Activations& ref, const Activations& got) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < in.x.size(); ++i) {
    const double d = static_cast<double>(got.x[i]) - ref.x[i];
    const double u = static_cast<double>(ref.x[i]) - in.x[i];
    num += d * d;
    den += u * u;
  }
  return den > 0.0 ? num / den : 0.0;
}

}  // namespace

absl::Status ModelQuantizeOptions::Validate() const {
  RETURN_IF_ERROR(quant.Validate());
  if (method != "gptq" && method != "rtn")
    return absl::InvalidArgumentError(absl::StrCat("method '", method, "': expected gptq or rtn"));
  if (model_dir.empty()) return absl::InvalidArgumentError("--model is required");
  if (out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  if (method == "gptq" && calib_file.empty()) return absl::InvalidArgumentError("gptq needs --calib FILE");
  if (nsamples <= 0) return absl::InvalidArgumentError("--nsamples must be positive");
  if (seqlen < 2) return absl::InvalidArgumentError("--seqlen must be at least 2");
  return absl::OkStatus();
}

absl::Status QuantizeModel(const ModelQuantizeOptions& o, const std::function<void(const LayerProgress&)>& progress) {
  RETURN_IF_ERROR(o.Validate());
  ASSIGN_OR_RETURN(auto runner, LayerwiseRunner::Load(o.model_dir));
  const ModelConfig& c = runner->config();
  if (o.seqlen > c.max_position_embeddings)
    return absl::InvalidArgumentError(absl::StrCat("--seqlen ", o.seqlen, " exceeds max_position_embeddings ",
                                                   c.max_position_embeddings));
  for (const char* name : kLinearNames) {
    RETURN_IF_ERROR(o.quant.ValidateFor(LinearByName(runner->layers()[0], name).in));
  }
  const bool calibrate = !o.calib_file.empty();
  Activations acts;
  if (calibrate) {
    ASSIGN_OR_RETURN(auto windows, CalibrationWindows(o));
    ASSIGN_OR_RETURN(acts, runner->Embed(windows));
  }

  std::map<std::string, QuantizedLinear> quantized;
  const int64_t L = c.num_hidden_layers;
  for (int64_t l = 0; l < L; ++l) {
    const auto start = std::chrono::steady_clock::now();
    HostLayer& layer = runner->layers()[l];
    const HostLayer original = layer;
    const std::string prefix = absl::StrCat("model.layers.", l, ".");
    auto quantize = [&](const std::string& name, const std::vector<double>* hessian) -> absl::Status {
      HostLinear& lin = LinearByName(layer, name);
      absl::StatusOr<QuantizedLinear> q = hessian ? QuantizeGptq(lin.w.data(), lin.out, lin.in, *hessian, o.quant)
                                                  : QuantizeRtn(lin.w.data(), lin.out, lin.in, o.quant);
      if (!q.ok()) return absl::Status(q.status().code(), absl::StrCat(prefix, name, ": ", q.status().message()));
      // Later sub-layers and layers see exactly the weights the checkpoint will hold.
      lin.w = q->Dequantize();
      quantized[prefix + name] = std::move(*q);
      return absl::OkStatus();
    };
    if (o.method == "gptq") {
      // True-sequential: each group of linears is calibrated on inputs computed with the
      // groups before it already quantized.
      const std::vector<std::pair<std::vector<std::string>, std::vector<float> LayerTrace::*>> stages = {
          {{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}, &LayerTrace::qkv_in},
          {{"self_attn.o_proj"}, &LayerTrace::o_in},
          {{"mlp.gate_proj", "mlp.up_proj"}, &LayerTrace::gate_up_in},
          {{"mlp.down_proj"}, &LayerTrace::down_in}};
      for (const auto& [names, input] : stages) {
        LayerTrace trace;
        runner->RunLayer(l, acts, &trace);
        const int64_t in = LinearByName(layer, names[0]).in;
        HessianAccumulator acc(in);
        const std::vector<float>& x = trace.*input;
        acc.Add(x.data(), static_cast<int64_t>(x.size()) / in);
        const std::vector<double> h = acc.Hessian();
        for (const std::string& name : names) RETURN_IF_ERROR(quantize(name, &h));
      }
    } else {
      for (const char* name : kLinearNames) RETURN_IF_ERROR(quantize(name, nullptr));
    }
    LayerProgress p;
    p.layer = l;
    p.num_layers = L;
    if (calibrate) {
      Activations got = runner->RunLayer(l, acts, nullptr);
      const HostLayer quantized_layer = layer;
      layer = original;
      Activations ref = runner->RunLayer(l, acts, nullptr);
      layer = quantized_layer;
      p.output_error = UpdateError(acts, ref, got);
      acts = std::move(got);
    }
    p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (progress) progress(p);
  }

  GptqConfig config;
  config.bits = o.quant.bits;
  config.group_size = o.quant.group_size;
  config.desc_act = o.method == "gptq" && o.quant.act_order;
  config.sym = o.quant.sym;
  config.true_sequential = true;
  config.damp_percent = o.quant.damp;
  config.format = o.format;
  return WriteGptqCheckpoint(o.model_dir, o.out_dir, config, quantized);
}

}  // namespace tessera::quant
