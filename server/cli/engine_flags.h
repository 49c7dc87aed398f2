// Engine and model flags shared by `tessera generate` and `tessera serve` (vLLM's names).
#pragma once

#include <memory>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/engine/engine.h"
#include "runtime/model/llama_model.h"
#include "runtime/tokenizer/tokenizer.h"
#include "server/cli/args.h"

namespace tessera::cli {

// Flags taking a value, and switches, that AddEngineFlags registers.
void AddEngineFlags(std::set<std::string>* value_flags, std::set<std::string>* switches);
absl::StatusOr<EngineOptions> ParseEngineOptions(const Args& args);
extern const char kEngineFlagsHelp[];

// A loaded model with its backend and tokenizer, ready for an engine.
struct LoadedModel {
  std::string dir;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tokenizer;
};
// Checks --device and --dtype values (usage errors, before anything is loaded).
absl::Status ValidateModelFlags(const Args& args);
// Uses --model (default: the built-in model), --device, --dtype.
absl::StatusOr<LoadedModel> LoadModelFromFlags(const Args& args);

}  // namespace tessera::cli
