// tessera-loadgen: command line for the serving load generator (vLLM's flag names where
// `vllm bench serve` has one). Exit 0 on success, 1 on failure, 2 on a usage error.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/loadgen/load_generator.h"

namespace {

using tessera::loadgen::LoadGenOptions;

constexpr char kUsage[] =
    "usage: tessera-loadgen [--host H] [--port P] [--endpoint /v1/completions] [--model M]\n"
    "  [--num-prompts N] [--request-rate R|inf] [--max-concurrency C] [--random-input-len L]\n"
    "  [--random-output-len L] [--random-range-ratio F] [--seed S] [--timeout SECONDS]\n"
    "  [--out FILE.json]\n";

template <typename T>
bool ParseNumber(const std::string& text, T* out) {
  if constexpr (std::is_same_v<T, double>) {
    if (text == "inf") {
      *out = INFINITY;
      return true;
    }
    return absl::SimpleAtod(text, out);
  } else {
    return absl::SimpleAtoi(text, out);
  }
}

int UsageError(const std::string& message) {
  std::fprintf(stderr, "tessera-loadgen: %s\n%s", message.c_str(), kUsage);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  LoadGenOptions options;
  std::string out_path;
  int port = options.port;
  double timeout_s = absl::ToDoubleSeconds(options.request_timeout);
  using Setter = std::function<bool(const std::string&)>;
  const std::map<std::string, Setter> flags = {
      {"host",
       [&](const std::string& v) {
         options.host = v;
         return true;
       }},
      {"port", [&](const std::string& v) { return ParseNumber(v, &port); }},
      {"endpoint",
       [&](const std::string& v) {
         options.endpoint = v;
         return true;
       }},
      {"model",
       [&](const std::string& v) {
         options.model = v;
         return true;
       }},
      {"num-prompts", [&](const std::string& v) { return ParseNumber(v, &options.num_prompts); }},
      {"request-rate", [&](const std::string& v) { return ParseNumber(v, &options.request_rate); }},
      {"max-concurrency",
       [&](const std::string& v) { return ParseNumber(v, &options.max_concurrency); }},
      {"random-input-len",
       [&](const std::string& v) { return ParseNumber(v, &options.input_len); }},
      {"random-output-len",
       [&](const std::string& v) { return ParseNumber(v, &options.output_len); }},
      {"random-range-ratio",
       [&](const std::string& v) { return ParseNumber(v, &options.range_ratio); }},
      {"seed", [&](const std::string& v) { return ParseNumber(v, &options.seed); }},
      {"timeout", [&](const std::string& v) { return ParseNumber(v, &timeout_s); }},
      {"out",
       [&](const std::string& v) {
         out_path = v;
         return true;
       }},
  };
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (arg.rfind("--", 0) != 0) return UsageError(absl::StrCat("unexpected argument '", arg, "'"));
    std::string name = arg.substr(2), value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return UsageError(absl::StrCat("--", name, " needs a value"));
    }
    auto flag = flags.find(name);
    if (flag == flags.end()) return UsageError(absl::StrCat("unknown flag --", name));
    if (!flag->second(value))
      return UsageError(absl::StrCat("bad value for --", name, ": '", value, "'"));
  }
  if (port < 1 || port > 65535) return UsageError("--port must be in [1, 65535]");
  options.port = static_cast<uint16_t>(port);
  if (!(timeout_s > 0)) return UsageError("--timeout must be positive");
  options.request_timeout = absl::Seconds(timeout_s);
  if (absl::Status status = options.Validate(); !status.ok()) {
    return UsageError(std::string(status.message()));
  }

  absl::StatusOr<tessera::loadgen::LoadReport> report = tessera::loadgen::RunLoad(options);
  if (!report.ok()) {
    std::fprintf(stderr, "tessera-loadgen: %s\n", std::string(report.status().message()).c_str());
    return 1;
  }
  std::fputs(report->ToText().c_str(), stdout);
  if (!out_path.empty()) {
    std::ofstream out(out_path);
    out << report->ToJson(options) << "\n";
    if (!out) {
      std::fprintf(stderr, "tessera-loadgen: cannot write %s\n", out_path.c_str());
      return 1;
    }
  }
  return report->completed > 0 ? 0 : 1;
}
