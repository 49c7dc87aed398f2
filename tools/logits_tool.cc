// tessera-logits: greedy decoding of one prompt straight through the model (no engine,
// no sampler), printing the last position's logits at every step, for comparison with
// an independent implementation (bench/device/hf_compare.py).
//   tessera-logits --model DIR --prompt-ids 1,2,3 [--steps N] [--device cpu|cuda]
//                  [--dtype auto|bfloat16|float16|float32] [--out FILE]
// Prints (or writes) {"prompt_ids", "greedy_ids", "logits": [[vocab floats] per step]};
// with --prompt-ids given several times, a JSON array of those, one per prompt.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "kernels/backend.h"
#include "nlohmann/json.hpp"
#include "runtime/model/llama_model.h"
#include "server/cli/args.h"

namespace {

using namespace tessera;

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "tessera-logits: %s\n", message.c_str());
  return code;
}

// One sequence owning blocks 0..n-1: a prefill of the prompt, then one decode step per
// generated token.
absl::StatusOr<nlohmann::json> GreedyWithLogits(LlamaModel& model, Backend& backend, const std::vector<int32_t>& prompt,
                                               int64_t steps) {
  const int64_t vocab = model.config().vocab_size;
  const int32_t total = static_cast<int32_t>(prompt.size() + steps), bs = 16;
  const int32_t blocks = (total + bs - 1) / bs;
  auto kv = PagedKvStorage::Create(backend, model.config(), blocks, bs);
  if (!kv.ok()) return kv.status();
  nlohmann::json out = {{"prompt_ids", prompt}, {"greedy_ids", nlohmann::json::array()},
                        {"logits", nlohmann::json::array()}};
  std::vector<int32_t> feed = prompt;
  int32_t pos = 0;
  for (int64_t step = 0; step < steps; ++step) {
    BatchLayout layout;
    layout.block_size = bs;
    layout.max_blocks_per_seq = blocks;
    for (int32_t b = 0; b < blocks; ++b) layout.block_tables.push_back(b);
    for (int32_t id : feed) {
      layout.token_ids.push_back(id);
      layout.positions.push_back(pos);
      layout.slot_mapping.push_back(pos);
      ++pos;
    }
    layout.query_start = {0, static_cast<int32_t>(feed.size())};
    layout.context_lens = {pos};
    layout.logits_rows = {static_cast<int32_t>(feed.size()) - 1};
    auto logits = model.Forward(layout, **kv);
    if (!logits.ok()) return logits.status();
    int32_t best = 0;
    for (int64_t v = 1; v < vocab; ++v) {
      if ((*logits)[v] > (*logits)[best]) best = static_cast<int32_t>(v);
    }
    out["greedy_ids"].push_back(best);
    out["logits"].push_back(*logits);
    feed = {best};
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  auto args = cli::Args::Parse(std::vector<std::string>(argv + 1, argv + argc),
                               {"model", "prompt-ids", "steps", "device", "dtype", "out"}, {});
  if (!args.ok()) return Fail(2, std::string(args.status().message()));
  if (!args->Has("model") || !args->Has("prompt-ids")) return Fail(2, "--model and --prompt-ids are required");
  std::vector<std::vector<int32_t>> prompts;
  for (const std::string& list : args->GetAll("prompt-ids")) {
    std::vector<int32_t> prompt;
    for (auto part : absl::StrSplit(list, ',', absl::SkipEmpty())) {
      int32_t id;
      if (!absl::SimpleAtoi(part, &id)) return Fail(2, "--prompt-ids: '" + std::string(part) + "' is not an integer");
      prompt.push_back(id);
    }
    if (prompt.empty()) return Fail(2, "--prompt-ids is empty");
    prompts.push_back(std::move(prompt));
  }
  auto steps = args->GetInt("steps", 1);
  if (!steps.ok() || *steps < 1) return Fail(2, "--steps must be a positive integer");

  auto backend = CreateBackend(args->GetOr("device", "auto"));
  if (!backend.ok()) return Fail(1, std::string(backend.status().message()));
  ModelLoadOptions load;
  load.dtype = args->GetOr("dtype", "auto");
  auto model = LlamaModel::Load(*args->Get("model"), backend->get(), load);
  if (!model.ok()) return Fail(1, std::string(model.status().message()));
  nlohmann::json all = nlohmann::json::array();
  for (const std::vector<int32_t>& prompt : prompts) {
    auto one = GreedyWithLogits(**model, **backend, prompt, *steps);
    if (!one.ok()) return Fail(1, std::string(one.status().message()));
    all.push_back(std::move(*one));
  }
  const nlohmann::json out = prompts.size() == 1 ? all[0] : all;
  if (args->Has("out")) {
    std::ofstream f(*args->Get("out"));
    if (!f) return Fail(1, *args->Get("out") + ": cannot write");
    f << out.dump() << "\n";
  } else {
    std::cout << out.dump() << "\n";
  }
  return 0;
}
