// `tessera generate`: text from a prompt on the default or a given model.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "nlohmann/json.hpp"
#include "runtime/generation/single_sequence.h"
#include "runtime/model/llama_model.h"
#include "runtime/tokenizer/tokenizer.h"
#include "server/cli/args.h"
#include "server/cli/commands.h"

namespace tessera::cli {

std::string DefaultModelDir() {
  if (const char* env = std::getenv("TESSERA_DEFAULT_MODEL")) return env;
  return std::string(TESSERA_SOURCE_DIR) + "/models/stories260k";
}

namespace {

constexpr char kGenerateHelp[] =
    "usage: tessera generate [--model DIR] --prompt TEXT [flags]\n"
    "  --model DIR          Hugging Face Llama directory (default: the built-in stories260k)\n"
    "  --prompt TEXT        prompt text\n"
    "  --max-tokens N       new tokens at most (default 128)\n"
    "  --temperature T      0 = greedy (default 1.0)\n"
    "  --top-p P  --top-k K  --min-p P  --seed S\n"
    "  --repetition-penalty R  --presence-penalty P  --frequency-penalty F\n"
    "  --json               print one JSON object: prompt_ids, ids, text, finish_reason\n"
    "  --device auto|cpu|cuda   --dtype auto|bfloat16|float16|float32\n";

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "tessera generate: %s\n", message.c_str());
  return code;
}

}  // namespace

int RunGenerate(const std::vector<std::string>& argv) {
  auto parsed = Args::Parse(argv,
                            {"model", "prompt", "max-tokens", "temperature", "top-p", "top-k", "min-p", "seed",
                             "repetition-penalty", "presence-penalty", "frequency-penalty", "device", "dtype"},
                            {"json", "help"});
  if (!parsed.ok()) return Fail(2, std::string(parsed.status().message()) + "\n" + kGenerateHelp);
  const Args& args = *parsed;
  if (args.Has("help")) {
    std::fputs(kGenerateHelp, stdout);
    return 0;
  }
  if (!args.Has("prompt")) return Fail(2, std::string("--prompt is required\n") + kGenerateHelp);
  SingleSequenceOptions opts;
  SamplingParams& sp = opts.sampling;
  auto max_tokens = args.GetInt("max-tokens", 128);
  auto temperature = args.GetDouble("temperature", 1.0);
  auto top_p = args.GetDouble("top-p", 1.0);
  auto top_k = args.GetInt("top-k", 0);
  auto min_p = args.GetDouble("min-p", 0.0);
  auto rep = args.GetDouble("repetition-penalty", 1.0);
  auto pres = args.GetDouble("presence-penalty", 0.0);
  auto freq = args.GetDouble("frequency-penalty", 0.0);
  for (const absl::Status& st : {max_tokens.status(), temperature.status(), top_p.status(), top_k.status(),
                                 min_p.status(), rep.status(), pres.status(), freq.status()}) {
    if (!st.ok()) return Fail(2, std::string(st.message()));
  }
  if (*max_tokens < 0) return Fail(2, "--max-tokens must not be negative");
  opts.max_tokens = static_cast<int32_t>(*max_tokens);
  sp.temperature = static_cast<float>(*temperature);
  sp.top_p = static_cast<float>(*top_p);
  sp.top_k = static_cast<int32_t>(*top_k);
  sp.min_p = static_cast<float>(*min_p);
  sp.repetition_penalty = static_cast<float>(*rep);
  sp.presence_penalty = static_cast<float>(*pres);
  sp.frequency_penalty = static_cast<float>(*freq);
  if (args.Has("seed")) {
    auto seed = args.GetInt("seed", 0);
    if (!seed.ok()) return Fail(2, std::string(seed.status().message()));
    sp.seed = static_cast<uint64_t>(*seed);
  }
  if (absl::Status st = sp.Validate(); !st.ok()) return Fail(2, std::string(st.message()));

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
  const Tokenizer& tok = **tokenizer;
  for (int32_t id : (*model)->config().eos_token_ids) opts.stop_token_ids.push_back(id);

  const bool json = args.Has("json");
  std::vector<int32_t> prompt_ids = tok.Encode(*args.Get("prompt"), tok.add_bos());
  const auto start = std::chrono::steady_clock::now();
  auto on_text = [&](const std::string& delta) {
    if (!json) {
      std::fwrite(delta.data(), 1, delta.size(), stdout);
      std::fflush(stdout);
    }
  };
  auto result = GenerateSingleSequence(**model, &tok, prompt_ids, opts, on_text);
  if (!result.ok()) return Fail(1, std::string(result.status().message()));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (json) {
    nlohmann::json out = {{"prompt_ids", result->prompt_ids},
                          {"ids", result->ids},
                          {"text", result->text},
                          {"finish_reason", result->finish_reason}};
    std::cout << out.dump() << std::endl;
  } else {
    std::printf("\n");
    std::fprintf(stderr, "[tessera] %zu tokens in %.3f s (%.1f tok/s) on %s, finish_reason=%s\n", result->ids.size(),
                 secs, secs > 0 ? result->ids.size() / secs : 0.0, (*backend)->name().c_str(),
                 result->finish_reason.c_str());
  }
  return 0;
}

}  // namespace tessera::cli
