// `tessera generate`: text from a prompt, or from a JSONL file of prompts run through the
// engine at once (offline batch mode), on the default or a given model.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/engine/engine.h"
#include "server/cli/args.h"
#include "server/cli/commands.h"
#include "server/cli/engine_flags.h"

namespace tessera::cli {

std::string DefaultModelDir() {
  if (const char* env = std::getenv("TESSERA_DEFAULT_MODEL")) return env;
  return std::string(TESSERA_SOURCE_DIR) + "/models/stories260k";
}

namespace {

constexpr char kGenerateHelp[] =
    "usage: tessera generate [--model DIR] (--prompt TEXT | --prompts-file FILE.jsonl) [flags]\n"
    "  --model DIR          Hugging Face Llama directory (default: the built-in stories260k)\n"
    "  --prompt TEXT        prompt text\n"
    "  --prompts-file F     one JSON object per line: prompt, optional max_tokens, temperature,\n"
    "                       top_p, top_k, seed; prints one JSON result per line, in input order\n"
    "  --max-tokens N       new tokens at most (default 128)\n"
    "  --temperature T      0 = greedy (default 1.0)\n"
    "  --top-p P  --top-k K  --min-p P  --seed S\n"
    "  --repetition-penalty R  --presence-penalty P  --frequency-penalty F\n"
    "  --json               print one JSON object: prompt_ids, ids, text, finish_reason\n";

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "tessera generate: %s\n", message.c_str());
  return code;
}

int ExitCodeFor(const absl::Status& st) { return st.code() == absl::StatusCode::kInvalidArgument ? 2 : 1; }

absl::StatusOr<SamplingParams> ParseSampling(const Args& args) {
  SamplingParams sp;
  auto temperature = args.GetDouble("temperature", 1.0);
  auto top_p = args.GetDouble("top-p", 1.0);
  auto top_k = args.GetInt("top-k", 0);
  auto min_p = args.GetDouble("min-p", 0.0);
  auto rep = args.GetDouble("repetition-penalty", 1.0);
  auto pres = args.GetDouble("presence-penalty", 0.0);
  auto freq = args.GetDouble("frequency-penalty", 0.0);
  for (const absl::Status& st : {temperature.status(), top_p.status(), top_k.status(), min_p.status(), rep.status(),
                                 pres.status(), freq.status()}) {
    if (!st.ok()) return st;
  }
  sp.temperature = static_cast<float>(*temperature);
  sp.top_p = static_cast<float>(*top_p);
  sp.top_k = static_cast<int32_t>(*top_k);
  sp.min_p = static_cast<float>(*min_p);
  sp.repetition_penalty = static_cast<float>(*rep);
  sp.presence_penalty = static_cast<float>(*pres);
  sp.frequency_penalty = static_cast<float>(*freq);
  if (args.Has("seed")) {
    auto seed = args.GetInt("seed", 0);
    if (!seed.ok()) return seed.status();
    sp.seed = static_cast<uint64_t>(*seed);
  }
  absl::Status st = sp.Validate();
  if (!st.ok()) return st;
  return sp;
}

struct PromptJob {
  GenerationRequest request;
  nlohmann::json result;
  bool done = false;
};

// Reads FILE.jsonl into requests; an unreadable file or a bad line is an error naming it.
absl::StatusOr<std::vector<PromptJob>> ReadPromptsFile(const std::string& path, const Tokenizer& tok,
                                                       const GenerationRequest& defaults) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::vector<PromptJob> jobs;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    auto bad = [&](const std::string& what) { return absl::InvalidArgumentError(absl::StrCat(path, ":", lineno, ": ", what)); };
    if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
    if (!j.contains("prompt") || !j["prompt"].is_string()) return bad("needs a string 'prompt'");
    PromptJob job;
    job.request = defaults;
    job.request.prompt_ids = tok.Encode(j["prompt"].get<std::string>(), tok.add_bos());
    if (j.contains("max_tokens")) {
      if (!j["max_tokens"].is_number_integer()) return bad("'max_tokens' must be an integer");
      job.request.max_tokens = j["max_tokens"].get<int32_t>();
    }
    if (j.contains("temperature")) {
      if (!j["temperature"].is_number()) return bad("'temperature' must be a number");
      job.request.sampling.temperature = j["temperature"].get<float>();
    }
    if (j.contains("top_p")) {
      if (!j["top_p"].is_number()) return bad("'top_p' must be a number");
      job.request.sampling.top_p = j["top_p"].get<float>();
    }
    if (j.contains("top_k")) {
      if (!j["top_k"].is_number_integer()) return bad("'top_k' must be an integer");
      job.request.sampling.top_k = j["top_k"].get<int32_t>();
    }
    if (j.contains("seed")) {
      if (!j["seed"].is_number_integer()) return bad("'seed' must be an integer");
      job.request.sampling.seed = j["seed"].get<uint64_t>();
    }
    if (absl::Status st = job.request.sampling.Validate(); !st.ok()) return bad(std::string(st.message()));
    jobs.push_back(std::move(job));
  }
  return jobs;
}

}  // namespace

int RunGenerate(const std::vector<std::string>& argv) {
  std::set<std::string> value_flags = {"prompt", "prompts-file", "max-tokens", "temperature", "top-p", "top-k",
                                       "min-p", "seed", "repetition-penalty", "presence-penalty", "frequency-penalty"};
  std::set<std::string> switches = {"json", "help"};
  AddEngineFlags(&value_flags, &switches);
  auto parsed = Args::Parse(argv, value_flags, switches);
  if (!parsed.ok()) return Fail(2, std::string(parsed.status().message()) + "\n" + kGenerateHelp + kEngineFlagsHelp);
  const Args& args = *parsed;
  if (args.Has("help")) {
    std::fputs(kGenerateHelp, stdout);
    std::fputs(kEngineFlagsHelp, stdout);
    return 0;
  }
  if (args.Has("prompt") == args.Has("prompts-file"))
    return Fail(2, std::string("give exactly one of --prompt and --prompts-file\n") + kGenerateHelp);
  GenerationRequest defaults;
  auto sampling = ParseSampling(args);
  if (!sampling.ok()) return Fail(2, std::string(sampling.status().message()));
  defaults.sampling = *sampling;
  auto max_tokens = args.GetInt("max-tokens", 128);
  if (!max_tokens.ok()) return Fail(2, std::string(max_tokens.status().message()));
  if (*max_tokens < 0) return Fail(2, "--max-tokens must not be negative");
  defaults.max_tokens = static_cast<int32_t>(*max_tokens);
  auto engine_opts = ParseEngineOptions(args);
  if (!engine_opts.ok()) return Fail(2, std::string(engine_opts.status().message()));

  if (absl::Status st = ValidateModelFlags(args); !st.ok()) return Fail(2, std::string(st.message()));
  auto loaded = LoadModelFromFlags(args);
  if (!loaded.ok()) return Fail(1, std::string(loaded.status().message()));
  const Tokenizer& tok = *loaded->tokenizer;
  std::vector<PromptJob> jobs;
  if (args.Has("prompts-file")) {
    auto read = ReadPromptsFile(*args.Get("prompts-file"), tok, defaults);
    if (!read.ok()) return Fail(1, std::string(read.status().message()));
    jobs = std::move(*read);
  } else {
    PromptJob job;
    job.request = defaults;
    job.request.prompt_ids = tok.Encode(*args.Get("prompt"), tok.add_bos());
    jobs.push_back(std::move(job));
  }
  auto engine = Engine::Create(loaded->model.get(), &tok, *engine_opts);
  if (!engine.ok()) return Fail(1, std::string(engine.status().message()));

  const bool batch = args.Has("prompts-file");
  const bool json = args.Has("json") || batch;
  const auto start = std::chrono::steady_clock::now();
  std::mutex mu;
  std::condition_variable cv;
  size_t next_to_print = 0;
  int64_t total_tokens = 0;
  int failures = 0;
  // Results print in input order as soon as every earlier one has printed.
  auto flush_ready = [&] {
    while (next_to_print < jobs.size() && jobs[next_to_print].done) {
      if (json) std::cout << jobs[next_to_print].result.dump() << std::endl;
      ++next_to_print;
    }
  };
  for (size_t i = 0; i < jobs.size(); ++i) {
    PromptJob& job = jobs[i];
    job.result = {{"prompt_ids", job.request.prompt_ids}, {"ids", nlohmann::json::array()}, {"text", ""}};
    if (job.request.max_tokens == 0) {  // nothing to generate
      job.result["finish_reason"] = "length";
      job.done = true;
      continue;
    }
    auto id = (*engine)->Submit(job.request, [&, i](RequestOutput o) {
      std::lock_guard<std::mutex> lock(mu);
      PromptJob& j = jobs[i];
      for (int32_t t : o.token_ids) j.result["ids"].push_back(t);
      j.result["text"] = j.result["text"].get<std::string>() + o.text;
      total_tokens += static_cast<int64_t>(o.token_ids.size());
      if (!json && !o.text.empty()) {
        std::fwrite(o.text.data(), 1, o.text.size(), stdout);
        std::fflush(stdout);
      }
      if (o.finished) {
        j.result["finish_reason"] = o.finish_reason;
        if (!o.status.ok()) {
          j.result["error"] = std::string(o.status.message());
          ++failures;
        }
        j.done = true;
        flush_ready();
        cv.notify_all();
      }
    });
    if (!id.ok()) {
      std::lock_guard<std::mutex> lock(mu);
      if (!batch) return Fail(ExitCodeFor(id.status()), std::string(id.status().message()));
      job.result["finish_reason"] = "error";
      job.result["error"] = std::string(id.status().message());
      job.done = true;
      ++failures;
    }
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    flush_ready();
    cv.wait(lock, [&] { return next_to_print == jobs.size(); });
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!json) std::printf("\n");
  EngineStats stats = (*engine)->Stats();
  if (!json) std::fprintf(stderr, "[tessera] %zu prompt(s), %lld tokens in %.3f s (%.1f tok/s) on %s, %lld preemptions\n", jobs.size(),
               static_cast<long long>(total_tokens), secs, secs > 0 ? total_tokens / secs : 0.0,
               loaded->backend->name().c_str(), static_cast<long long>(stats.num_preemptions_total));
  return failures == 0 ? 0 : 1;
}

}  // namespace tessera::cli
