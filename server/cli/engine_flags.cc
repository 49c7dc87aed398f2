#include "server/cli/engine_flags.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"
#include "server/cli/commands.h"

namespace tessera::cli {

const char kEngineFlagsHelp[] =
    "engine flags:\n"
    "  --device auto|cpu|cuda        --dtype auto|bfloat16|float16|float32\n"
    "  --kv-blocks N | --kv-cache-memory BYTES | --gpu-memory-utilization F (default 0.9)\n"
    "  --kv-cache-dtype auto|fp8     fp8: E4M3 with a scale per token and kv head\n"
    "  --block-size 16  --max-num-seqs 256  --max-num-batched-tokens 2048  --max-model-len N\n"
    "  --enable-prefix-caching (default) | --no-enable-prefix-caching  --tensor-parallel-size 1\n"
    "  --enforce-eager                no CUDA graphs for decode steps\n"
    "  --no-output-thread             run request callbacks on the engine thread between steps\n"
    "  --overlap-outputs auto|on|off  make a step's outputs while the next forward runs (auto: on a GPU)\n";

void AddEngineFlags(std::set<std::string>* value_flags, std::set<std::string>* switches) {
  for (const char* f : {"model", "device", "dtype", "kv-blocks", "kv-cache-memory", "gpu-memory-utilization",
                        "block-size", "max-num-seqs", "max-num-batched-tokens", "max-model-len",
                        "tensor-parallel-size", "kv-cache-dtype", "overlap-outputs"})
    value_flags->insert(f);
  switches->insert("enable-prefix-caching");
  switches->insert("no-enable-prefix-caching");
  switches->insert("enforce-eager");
  switches->insert("no-output-thread");
}

absl::StatusOr<EngineOptions> ParseEngineOptions(const Args& args) {
  EngineOptions o;
  ASSIGN_OR_RETURN(int64_t blocks, args.GetInt("kv-blocks", 0));
  ASSIGN_OR_RETURN(int64_t mem, args.GetInt("kv-cache-memory", 0));
  ASSIGN_OR_RETURN(double util, args.GetDouble("gpu-memory-utilization", 0.9));
  ASSIGN_OR_RETURN(int64_t bs, args.GetInt("block-size", 16));
  ASSIGN_OR_RETURN(int64_t seqs, args.GetInt("max-num-seqs", 256));
  ASSIGN_OR_RETURN(int64_t tokens, args.GetInt("max-num-batched-tokens", 2048));
  ASSIGN_OR_RETURN(int64_t len, args.GetInt("max-model-len", 0));
  ASSIGN_OR_RETURN(int64_t tp, args.GetInt("tensor-parallel-size", 1));
  if (tp != 1) return absl::InvalidArgumentError("--tensor-parallel-size: this build serves on one device (1)");
  o.num_kv_blocks = blocks;
  o.kv_cache_memory_bytes = mem;
  o.gpu_memory_utilization = util;
  o.kv_cache_dtype = args.GetOr("kv-cache-dtype", "auto");
  o.block_size = static_cast<int32_t>(bs);
  o.max_num_seqs = static_cast<int32_t>(seqs);
  o.max_num_batched_tokens = static_cast<int32_t>(tokens);
  o.max_model_len = static_cast<int32_t>(len);
  o.enable_prefix_caching = !args.Has("no-enable-prefix-caching");
  o.enforce_eager = args.Has("enforce-eager");
  o.output_thread = !args.Has("no-output-thread");
  o.overlap_outputs = args.GetOr("overlap-outputs", "auto");
  RETURN_IF_ERROR(o.Validate());
  return o;
}

absl::Status ValidateModelFlags(const Args& args) {
  const std::string device = args.GetOr("device", "auto");
  if (device != "auto" && device != "cpu" && device != "cuda")
    return absl::InvalidArgumentError(absl::StrCat("--device '", device, "': expected auto, cpu or cuda"));
  ModelLoadOptions load;
  load.dtype = args.GetOr("dtype", "auto");
  return load.Validate();
}

absl::StatusOr<LoadedModel> LoadModelFromFlags(const Args& args) {
  LoadedModel m;
  m.dir = args.GetOr("model", DefaultModelDir());
  if (!std::filesystem::is_directory(m.dir))
    return absl::NotFoundError(absl::StrCat(m.dir, ": not a model directory"));
  ModelLoadOptions load;
  load.dtype = args.GetOr("dtype", "auto");
  RETURN_IF_ERROR(load.Validate());
  ASSIGN_OR_RETURN(m.backend, CreateBackend(args.GetOr("device", "auto")));
  ASSIGN_OR_RETURN(m.model, LlamaModel::Load(m.dir, m.backend.get(), load));
  ASSIGN_OR_RETURN(m.tokenizer, LoadTokenizer(m.dir));
  return m;
}

}  // namespace tessera::cli
