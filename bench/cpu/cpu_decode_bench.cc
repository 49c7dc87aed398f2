// CPU decode throughput of one or more models, against the memory roofline measured in
// the same run (copy bandwidth ÷ weight bytes read per token).
//   tessera-bench-cpu-decode [--model DIR]... [--prompt-tokens N] [--new-tokens N] [--out FILE]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <vector>

#include "kernels/backend.h"
#include "nlohmann/json.hpp"
#include "runtime/common/thread_pool.h"
#include "runtime/generation/single_sequence.h"
#include "server/cli/args.h"
#include "server/cli/commands.h"

namespace {

using Clock = std::chrono::steady_clock;

// Bytes read + written per second by a large memcpy split over the pool.
double CopyBandwidth() {
  const size_t bytes = size_t{1} << 30;
  std::vector<char> a(bytes, 1), b(bytes, 2);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = Clock::now();
    tessera::ThreadPool::Default().ParallelFor(64, [&](int64_t s, int64_t e) {
      std::memcpy(b.data() + s * (bytes / 64), a.data() + s * (bytes / 64), (e - s) * (bytes / 64));
    });
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::max(best, 2.0 * bytes / secs);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  auto args = tessera::cli::Args::Parse(std::vector<std::string>(argv + 1, argv + argc),
                                        {"model", "prompt-tokens", "new-tokens", "out"}, {});
  if (!args.ok()) {
    std::fprintf(stderr, "%s\n", std::string(args.status().message()).c_str());
    return 2;
  }
  std::vector<std::string> models = args->GetAll("model");
  if (models.empty()) models.push_back(tessera::cli::DefaultModelDir());
  const int prompt_tokens = static_cast<int>(*args->GetInt("prompt-tokens", 16));
  const int new_tokens = static_cast<int>(*args->GetInt("new-tokens", 32));
  const double bw = CopyBandwidth();
  std::printf("copy bandwidth: %.2f GB/s (read + write), %d threads\n", bw / 1e9, tessera::ThreadPool::Default().size());
  nlohmann::json results = nlohmann::json::array();
  auto backend = std::move(*tessera::CreateBackend("cpu"));
  for (const std::string& dir : models) {
    auto model = tessera::LlamaModel::Load(dir, backend.get());
    if (!model.ok()) {
      std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
      return 1;
    }
    const auto& c = (*model)->config();
    std::vector<int32_t> prompt(prompt_tokens);
    for (int i = 0; i < prompt_tokens; ++i) prompt[i] = 1 + (i * 7919) % static_cast<int>(c.vocab_size - 1);
    tessera::SingleSequenceOptions opts;
    opts.sampling.temperature = 0.0f;
    opts.max_tokens = 1;
    auto t0 = Clock::now();
    auto prefill = tessera::GenerateSingleSequence(**model, nullptr, prompt, opts);  // prefill + 1 token
    const double prefill_s = std::chrono::duration<double>(Clock::now() - t0).count();
    opts.max_tokens = new_tokens + 1;
    t0 = Clock::now();
    auto run = tessera::GenerateSingleSequence(**model, nullptr, prompt, opts);
    const double total_s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (!prefill.ok() || !run.ok()) {
      std::fprintf(stderr, "generation failed\n");
      return 1;
    }
    const double decode_s = std::max(1e-9, total_s - prefill_s);
    const double tok_s = new_tokens / decode_s;
    // Per decoded token every weight is read once except the embedding table (one row).
    const double bytes_per_token = static_cast<double>((*model)->weight_bytes()) -
                                   (c.tie_word_embeddings ? 0.0 : c.vocab_size * c.hidden_size * DTypeSize((*model)->weight_dtype()));
    const double roofline = (bw / 2.0) / bytes_per_token;  // a token reads its bytes once
    std::printf("%-40s decode %.2f tok/s, roofline %.2f tok/s (%.0f%%), prefill %d tokens %.3f s\n", dir.c_str(), tok_s,
                roofline, 100.0 * tok_s / roofline, prompt_tokens, prefill_s);
    results.push_back({{"device", "cpu"},
                       {"model", dir},
                       {"shape", {{"hidden", c.hidden_size}, {"layers", c.num_hidden_layers}, {"vocab", c.vocab_size}}},
                       {"batch", 1},
                       {"threads", tessera::ThreadPool::Default().size()},
                       {"tokens_per_s", tok_s},
                       {"roofline_tokens_per_s", roofline},
                       {"fraction_of_roofline", tok_s / roofline},
                       {"copy_bandwidth_gbs", bw / 1e9}});
  }
  if (args->Has("out")) std::ofstream(*args->Get("out")) << results.dump(2) << "\n";
  return 0;
}
