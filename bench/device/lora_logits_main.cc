// tessera-lora-logits: runs one prompt through a model with a PEFT LoRA adapter and prints
// the last position's logits and a greedy continuation as JSON. The reference side of
// lora_peft_check.py, which compares them with PEFT's.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "runtime/common/status_macros.h"
#include "runtime/engine/engine.h"
#include "runtime/lora/lora_registry.h"
#include "server/cli/args.h"

namespace tessera {
namespace {

constexpr const char* kUsage =
    "usage: tessera-lora-logits --model DIR --prompt-ids 1,2,3 [--adapter DIR] [--greedy N]\n"
    "                           [--device cpu|cuda|auto] [--dtype auto|float32|bfloat16|float16]\n"
    "                           [--max-lora-rank 64]\n";

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text) {
  std::vector<int32_t> ids;
  for (absl::string_view piece : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t v;
    if (!absl::SimpleAtoi(piece, &v)) return absl::InvalidArgumentError("--prompt-ids: '" + std::string(piece) + "' is not an integer");
    ids.push_back(v);
  }
  if (ids.empty()) return absl::InvalidArgumentError("--prompt-ids is empty");
  return ids;
}

// Last-position logits of the prompt as one prefill, every token in `slot` (-1: base).
absl::StatusOr<std::vector<float>> PromptLogits(LlamaModel& model, const std::vector<int32_t>& ids, int32_t slot) {
  const int32_t bs = 16, n = static_cast<int32_t>(ids.size());
  const int32_t blocks = (n + bs - 1) / bs;
  ASSIGN_OR_RETURN(auto kv, PagedKvStorage::Create(model.backend(), model.config(), blocks, bs));
  BatchLayout l;
  l.block_size = bs;
  l.max_blocks_per_seq = blocks;
  for (int32_t i = 0; i < n; ++i) {
    l.token_ids.push_back(ids[i]);
    l.positions.push_back(i);
    l.slot_mapping.push_back(i);
    if (slot >= 0) l.lora_slots.push_back(slot);
  }
  l.query_start = {0, n};
  l.context_lens = {n};
  for (int32_t b = 0; b < blocks; ++b) l.block_tables.push_back(b);
  l.logits_rows = {n - 1};
  return model.Forward(l, *kv);
}

absl::Status Run(const cli::Args& args) {
  const std::string model_dir = args.GetOr("model", "");
  if (model_dir.empty()) return absl::InvalidArgumentError("--model is required");
  ASSIGN_OR_RETURN(std::vector<int32_t> ids, ParseIds(args.GetOr("prompt-ids", "")));
  ASSIGN_OR_RETURN(int64_t greedy, args.GetInt("greedy", 0));
  ASSIGN_OR_RETURN(int64_t max_rank, args.GetInt("max-lora-rank", 64));
  ASSIGN_OR_RETURN(auto backend, CreateBackend(args.GetOr("device", "cpu")));
  ModelLoadOptions mo;
  mo.dtype = args.GetOr("dtype", "auto");
  ASSIGN_OR_RETURN(auto model, LlamaModel::Load(model_dir, backend.get(), mo));

  std::unique_ptr<LoraRegistry> registry;
  std::string adapter_name;
  int32_t slot = -1;
  if (args.Has("adapter")) {
    LoraRegistryOptions ro;
    ro.max_gpu_adapters = 1;
    ro.max_cpu_adapters = 1;
    ro.max_lora_rank = static_cast<int32_t>(max_rank);
    ASSIGN_OR_RETURN(registry, LoraRegistry::Create(backend.get(), model->config(), ro));
    adapter_name = "adapter";
    ASSIGN_OR_RETURN(uint64_t id, registry->Load(adapter_name, *args.Get("adapter")));
    model->SetLoraTables(&registry->tables());
    std::vector<uint64_t> one = {id};
    ASSIGN_OR_RETURN(auto slots, registry->AcquireSlots(one));
    slot = slots[0];
    registry->ReleaseSlots(one);
  }
  ASSIGN_OR_RETURN(std::vector<float> logits, PromptLogits(*model, ids, slot));

  std::vector<int32_t> continuation;
  if (greedy > 0) {
    EngineOptions eo;
    eo.num_kv_blocks = static_cast<int64_t>((ids.size() + greedy) / 16 + 2);
    ASSIGN_OR_RETURN(auto engine, Engine::Create(model.get(), nullptr, eo, registry.get()));
    GenerationRequest req;
    req.prompt_ids = ids;
    req.sampling.temperature = 0.0f;
    req.max_tokens = static_cast<int32_t>(greedy);
    req.ignore_eos = true;
    req.adapter = adapter_name;
    absl::Status final_status;
    ASSIGN_OR_RETURN(uint64_t rid, engine->Submit(req, [&](RequestOutput o) {
      continuation.insert(continuation.end(), o.token_ids.begin(), o.token_ids.end());
      if (o.finished) final_status = o.status;
    }));
    (void)rid;
    engine->Drain();
    RETURN_IF_ERROR(final_status);
  }
  nlohmann::json out = {{"model", model_dir},
                        {"adapter", args.GetOr("adapter", "")},
                        {"device", backend->name()},
                        {"prompt_ids", ids},
                        {"logits", logits},
                        {"greedy", continuation}};
  std::printf("%s\n", out.dump().c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  std::vector<std::string> argv_rest(argv + 1, argv + argc);
  auto args = tessera::cli::Args::Parse(
      argv_rest, {"model", "adapter", "prompt-ids", "greedy", "device", "dtype", "max-lora-rank"}, {"help"});
  if (!args.ok() || args->Has("help")) {
    if (!args.ok()) std::fprintf(stderr, "tessera-lora-logits: %s\n", std::string(args.status().message()).c_str());
    std::fprintf(args.ok() ? stdout : stderr, "%s", tessera::kUsage);
    return args.ok() ? 0 : 2;
  }
  absl::Status st = tessera::Run(*args);
  if (!st.ok()) {
    std::fprintf(stderr, "tessera-lora-logits: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
