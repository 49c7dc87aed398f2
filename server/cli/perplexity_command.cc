// `tessera perplexity`: sliding-window perplexity of a model over a text file.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "quant/eval/perplexity.h"
#include "runtime/model/llama_model.h"
#include "runtime/tokenizer/tokenizer.h"
#include "server/cli/args.h"
#include "server/cli/commands.h"

namespace tessera::cli {
namespace {

constexpr char kPerplexityHelp[] =
    "usage: tessera perplexity [--model DIR] --text FILE [--ctx N] [--stride S]\n"
    "  --ctx N      window length in tokens (default: the model's max_position_embeddings)\n"
    "  --stride S   window advance; only tokens not scored before count (default ctx/2)\n"
    "  --device auto|cpu|cuda   --dtype auto|bfloat16|float16|float32\n"
    "The last line of stdout is 'perplexity X'.\n";

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "tessera perplexity: %s\n", message.c_str());
  return code;
}

}  // namespace

int RunPerplexity(const std::vector<std::string>& argv) {
  auto parsed = Args::Parse(argv, {"model", "text", "ctx", "stride", "device", "dtype"}, {"help"});
  if (!parsed.ok()) return Fail(2, std::string(parsed.status().message()) + "\n" + kPerplexityHelp);
  const Args& args = *parsed;
  if (args.Has("help")) {
    std::fputs(kPerplexityHelp, stdout);
    return 0;
  }
  if (!args.Has("text")) return Fail(2, std::string("--text is required\n") + kPerplexityHelp);
  auto ctx = args.GetInt("ctx", 0);
  auto stride = args.GetInt("stride", 0);
  if (!ctx.ok()) return Fail(2, std::string(ctx.status().message()));
  if (!stride.ok()) return Fail(2, std::string(stride.status().message()));
  quant::PerplexityOptions opts;
  opts.ctx = *ctx;
  opts.stride = *stride;
  if (absl::Status st = opts.Validate(); !st.ok()) return Fail(2, std::string(st.message()));

  std::ifstream in(*args.Get("text"));
  if (!in) return Fail(1, absl::StrCat(*args.Get("text"), ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string model_dir = args.GetOr("model", DefaultModelDir());
  if (!std::filesystem::is_directory(model_dir)) return Fail(1, absl::StrCat(model_dir, ": not a model directory"));
  auto backend = CreateBackend(args.GetOr("device", "auto"));
  if (!backend.ok()) return Fail(2, std::string(backend.status().message()));
  ModelLoadOptions load;
  load.dtype = args.GetOr("dtype", "auto");
  if (absl::Status st = load.Validate(); !st.ok()) return Fail(2, std::string(st.message()));
  auto model = LlamaModel::Load(model_dir, backend->get(), load);
  if (!model.ok()) return Fail(1, std::string(model.status().message()));
  auto tokenizer = LoadTokenizer(model_dir);
  if (!tokenizer.ok()) return Fail(1, std::string(tokenizer.status().message()));
  const std::vector<int32_t> tokens = (*tokenizer)->Encode(ss.str(), (*tokenizer)->add_bos());
  std::fprintf(stderr, "[tessera] %zu tokens from %s\n", tokens.size(), args.Get("text")->c_str());
  auto r = quant::ComputePerplexity(**model, tokens, opts, [](int64_t w, int64_t scored, double ppl) {
    std::fprintf(stderr, "[tessera] window %lld: %lld tokens scored, perplexity so far %.4f\n",
                 static_cast<long long>(w), static_cast<long long>(scored), ppl);
  });
  if (!r.ok()) return Fail(1, std::string(r.status().message()));
  std::printf("tokens %lld\nperplexity %.6f\n", static_cast<long long>(r->scored_tokens), r->perplexity);
  return 0;
}

}  // namespace tessera::cli
