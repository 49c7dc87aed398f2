// Engine throughput at several concurrency levels on one model (default: the built-in
// one), reporting the batching gain over one request at a time, measured in one run.
//   tessera-bench-engine [--model DIR] [--concurrency 1,8,64] [--max-tokens 64]
//                        [--device auto|cpu|cuda] [--out FILE]
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "runtime/engine/engine.h"
#include "server/cli/args.h"
#include "server/cli/engine_flags.h"

int main(int argc, char** argv) {
  using namespace tessera;
  std::set<std::string> values = {"concurrency", "max-tokens", "out"};
  std::set<std::string> switches;
  cli::AddEngineFlags(&values, &switches);
  auto args = cli::Args::Parse(std::vector<std::string>(argv + 1, argv + argc), values, switches);
  if (!args.ok()) {
    std::fprintf(stderr, "%s\n", std::string(args.status().message()).c_str());
    return 2;
  }
  auto loaded = cli::LoadModelFromFlags(*args);
  auto opts = cli::ParseEngineOptions(*args);
  if (!loaded.ok() || !opts.ok()) {
    std::fprintf(stderr, "%s\n", std::string((loaded.ok() ? opts.status() : loaded.status()).message()).c_str());
    return 1;
  }
  const int max_tokens = static_cast<int>(*args->GetInt("max-tokens", 64));
  std::vector<int> levels;
  for (auto part : absl::StrSplit(args->GetOr("concurrency", "1,8,64"), ',')) {
    int v;
    if (absl::SimpleAtoi(part, &v) && v > 0) levels.push_back(v);
  }
  auto engine = Engine::Create(loaded->model.get(), loaded->tokenizer.get(), *opts);
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", std::string(engine.status().message()).c_str());
    return 1;
  }
  // Step phases of the current level (the observer runs on the engine thread).
  struct Phases {
    int64_t steps = 0;
    double step = 0, forward = 0, schedule = 0, update = 0, outputs = 0;
  };
  std::mutex phase_mu;
  Phases phases;
  (*engine)->SetStepObserver([&](const StepInfo& s) {
    std::lock_guard<std::mutex> lock(phase_mu);
    ++phases.steps;
    phases.step += s.seconds;
    phases.forward += s.forward_seconds;
    phases.schedule += s.schedule_seconds;
    phases.update += s.update_seconds;
    phases.outputs += s.outputs_seconds;
  });
  const char* prompts[] = {"Once upon a time", "The little dog", "Lily and Ben went to the park", "One day"};
  nlohmann::json results = nlohmann::json::array();
  double base = 0;
  for (int level : levels) {
    std::mutex mu;
    int64_t tokens = 0;
    {
      std::lock_guard<std::mutex> lock(phase_mu);
      phases = Phases();
    }
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < level; ++i) {
      GenerationRequest r;
      r.prompt_ids = loaded->tokenizer->Encode(prompts[i % 4], true);
      r.sampling.temperature = 0.8f;
      r.sampling.seed = i;
      r.max_tokens = max_tokens;
      r.ignore_eos = true;  // every request produces exactly max_tokens
      auto id = (*engine)->Submit(r, [&](RequestOutput o) {
        std::lock_guard<std::mutex> lock(mu);
        tokens += static_cast<int64_t>(o.token_ids.size());
      });
      if (!id.ok()) {
        std::fprintf(stderr, "%s\n", std::string(id.status().message()).c_str());
        return 1;
      }
    }
    (*engine)->Drain();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double tps = tokens / secs;
    if (base == 0) base = tps;
    Phases p;
    {
      std::lock_guard<std::mutex> lock(phase_mu);
      p = phases;
    }
    const double per_step_ms = p.steps > 0 ? 1e3 / static_cast<double>(p.steps) : 0.0;
    std::printf("concurrency %4d: %8.1f output tok/s  (%.2fx the first level)\n", level, tps, tps / base);
    std::printf("  %lld steps, mean ms: step %.3f = schedule %.3f + forward and sampling %.3f + scheduler update %.3f"
                " + outputs %.3f\n",
                static_cast<long long>(p.steps), p.step * per_step_ms, p.schedule * per_step_ms, p.forward * per_step_ms,
                p.update * per_step_ms, p.outputs * per_step_ms);
    results.push_back({{"device", loaded->backend->name()},
                       {"model", loaded->dir},
                       {"batch", level},
                       {"max_tokens", max_tokens},
                       {"tokens_per_s", tps},
                       {"gain_vs_first", tps / base},
                       {"steps", p.steps},
                       {"mean_step_ms", p.step * per_step_ms},
                       {"mean_schedule_ms", p.schedule * per_step_ms},
                       {"mean_forward_ms", p.forward * per_step_ms},
                       {"mean_update_ms", p.update * per_step_ms},
                       {"mean_outputs_ms", p.outputs * per_step_ms}});
  }
  if (args->Has("out")) std::ofstream(*args->Get("out")) << results.dump(2) << "\n";
  return 0;
}
