// `tessera quantize gptq|rtn`: writes an AutoGPTQ-layout checkpoint of a model.
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "quant/gptq/model_quantizer.h"
#include "server/cli/args.h"
#include "server/cli/commands.h"

namespace tessera::cli {
namespace {

constexpr char kQuantizeHelp[] =
    "usage: tessera quantize gptq|rtn --model DIR --out DIR [flags]\n"
    "  --method gptq|rtn    same as the positional method (rtn: round-to-nearest baseline)\n"
    "  --bits N             2, 3, 4 or 8 (default 4)\n"
    "  --group-size G       inputs per scale/zero group, must divide every in_features;\n"
    "                       -1 = per output channel (default 128)\n"
    "  --act-order          GPTQ: quantize inputs in order of descending Hessian diagonal\n"
    "  --sym | --asym       symmetric (default) or asymmetric zero points\n"
    "  --calib FILE         calibration text (default: data/calib/stories_calib.txt)\n"
    "  --nsamples N         calibration windows (default 64)\n"
    "  --seqlen L           tokens per window (default 256)\n"
    "  --damp F             Hessian dampening, fraction of mean diagonal (default 0.01)\n"
    "  --seed S             window sampling seed (default 0)\n"
    "  --format gptq|gptq_v2  zero-point convention of qzeros (default gptq = AutoGPTQ v1)\n";

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "tessera quantize: %s\n", message.c_str());
  return code;
}

}  // namespace

int RunQuantize(const std::vector<std::string>& argv) {
  auto parsed = Args::Parse(argv,
                            {"model", "out", "method", "bits", "group-size", "calib", "nsamples", "seqlen", "damp",
                             "seed", "format"},
                            {"act-order", "sym", "asym", "help"});
  if (!parsed.ok()) return Fail(2, std::string(parsed.status().message()) + "\n" + kQuantizeHelp);
  const Args& args = *parsed;
  if (args.Has("help")) {
    std::fputs(kQuantizeHelp, stdout);
    return 0;
  }
  quant::ModelQuantizeOptions o;
  if (args.positional().size() > 1) return Fail(2, std::string("expected one method (gptq or rtn)\n") + kQuantizeHelp);
  std::string method = args.positional().empty() ? "" : args.positional()[0];
  if (args.Has("method")) {
    if (!method.empty() && method != *args.Get("method"))
      return Fail(2, absl::StrCat("method '", method, "' conflicts with --method ", *args.Get("method")));
    method = *args.Get("method");
  }
  o.method = method.empty() ? "gptq" : method;
  if (o.method != "gptq" && o.method != "rtn") return Fail(2, absl::StrCat("unknown method '", o.method, "' (gptq or rtn)"));
  if (!args.Has("model") || !args.Has("out")) return Fail(2, std::string("--model and --out are required\n") + kQuantizeHelp);
  if (args.Has("sym") && args.Has("asym")) return Fail(2, "--sym and --asym exclude each other");
  o.model_dir = *args.Get("model");
  o.out_dir = *args.Get("out");
  auto bits = args.GetInt("bits", 4);
  auto group = args.GetInt("group-size", 128);
  auto nsamples = args.GetInt("nsamples", o.nsamples);
  auto seqlen = args.GetInt("seqlen", o.seqlen);
  auto seed = args.GetInt("seed", 0);
  auto damp = args.GetDouble("damp", 0.01);
  for (const absl::Status& st : {bits.status(), group.status(), nsamples.status(), seqlen.status(), seed.status(),
                                 damp.status()}) {
    if (!st.ok()) return Fail(2, std::string(st.message()));
  }
  o.quant.bits = static_cast<int>(*bits);
  o.quant.group_size = static_cast<int>(*group);
  o.quant.sym = !args.Has("asym");
  o.quant.act_order = args.Has("act-order");
  o.quant.damp = *damp;
  o.nsamples = *nsamples;
  o.seqlen = *seqlen;
  o.seed = static_cast<uint64_t>(*seed);
  const std::string format = args.GetOr("format", "gptq");
  if (format == "gptq") o.format = GptqCheckpointFormat::kGptqV1;
  else if (format == "gptq_v2") o.format = GptqCheckpointFormat::kGptqV2;
  else return Fail(2, absl::StrCat("--format '", format, "': expected gptq or gptq_v2"));
  o.calib_file = args.GetOr("calib", o.method == "gptq" ? std::string(TESSERA_SOURCE_DIR) + "/data/calib/stories_calib.txt" : "");
  if (absl::Status st = o.Validate(); !st.ok()) return Fail(2, std::string(st.message()));
  if (!std::filesystem::is_directory(o.model_dir)) return Fail(1, absl::StrCat(o.model_dir, ": not a model directory"));

  std::fprintf(stderr, "[tessera] quantizing %s with %s, %d bits, group size %d%s%s\n", o.model_dir.c_str(),
               o.method.c_str(), o.quant.bits, o.quant.group_size, o.quant.sym ? ", sym" : ", asym",
               o.method == "gptq" && o.quant.act_order ? ", act-order" : "");
  absl::Status st = quant::QuantizeModel(o, [](const quant::LayerProgress& p) {
    if (p.output_error >= 0)
      std::fprintf(stderr, "[tessera] layer %lld/%lld: %.2f s, mean layer-output error %.3e\n",
                   static_cast<long long>(p.layer + 1), static_cast<long long>(p.num_layers), p.seconds, p.output_error);
    else
      std::fprintf(stderr, "[tessera] layer %lld/%lld: %.2f s\n", static_cast<long long>(p.layer + 1),
                   static_cast<long long>(p.num_layers), p.seconds);
  });
  if (!st.ok()) return Fail(1, std::string(st.message()));
  std::fprintf(stderr, "[tessera] wrote %s\n", o.out_dir.c_str());
  return 0;
}

}  // namespace tessera::cli
