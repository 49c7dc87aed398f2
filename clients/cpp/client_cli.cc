#include "clients/cpp/client_cli.h"

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "clients/cpp/client.h"
#include "nlohmann/json.hpp"
#include "server/cli/args.h"

namespace tessera::client {
namespace {

using cli::Args;
using json = nlohmann::json;

constexpr char kUsage[] =
    "usage: tessera-client [--target HOST:PORT] [--timeout S] <command> [flags]\n"
    "  --target HOST:PORT   the server's gRPC listener (default: $TESSERA_TARGET or 127.0.0.1:50051)\n"
    "  --timeout S          deadline of each call in seconds (default: none)\n\n"
    "commands:\n"
    "  generate --prompt TEXT [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--min-p P]\n"
    "           [--seed S] [--model M] [--adapter A] [--stop S ...] [--ignore-eos] [--json]\n"
    "           streams the generated text to stdout as it arrives (--json: one object at the end)\n"
    "  tokenize --text TEXT [--model M] [--add-special-tokens=false] [--json]\n"
    "  models [--json]      the served model and its loaded LoRA adapters\n"
    "  load-lora --name N --path P [--token T]\n"
    "  unload-lora --name N [--token T]\n"
    "  drift-stats | drift-baseline | drift-reset [--model M] [--adapter A] [--token T]\n"
    "Admin commands send --token (default: $TESSERA_ADMIN_TOKEN) as a bearer token.\n";

const std::set<std::string> kGlobalFlags = {"target", "timeout"};

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "tessera-client: %s\n", message.c_str());
  return code;
}

int Usage(const std::string& message) {
  std::fprintf(stderr, "tessera-client: %s\n%s", message.c_str(), kUsage);
  return 2;
}

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

std::string Token(const Args& args) { return args.GetOr("token", EnvOr("TESSERA_ADMIN_TOKEN", "")); }

// Fills the request from the flags; a bad flag value is a usage error.
absl::Status BuildGenerateRequest(const Args& args, v1::GenerateRequest* req) {
  if (!args.Has("prompt")) return absl::InvalidArgumentError("generate needs --prompt");
  req->set_prompt(*args.Get("prompt"));
  req->set_model(args.GetOr("model", ""));
  req->set_adapter(args.GetOr("adapter", ""));
  req->set_ignore_eos(args.GetOr("ignore-eos", "false") == "true");
  for (const std::string& s : args.GetAll("stop")) req->add_stop(s);
  if (args.Has("max-tokens")) {
    auto n = args.GetInt("max-tokens", 0);
    if (!n.ok()) return n.status();
    if (*n < 0) return absl::InvalidArgumentError("--max-tokens must be >= 0");
    req->set_max_tokens(static_cast<uint32_t>(*n));
  }
  v1::SamplingParams* sp = req->mutable_sampling();
  for (const char* name : {"temperature", "top-p", "min-p"}) {
    if (!args.Has(name)) continue;
    auto v = args.GetDouble(name, 0);
    if (!v.ok()) return v.status();
    const std::string n = name;
    if (n == "temperature") sp->set_temperature(static_cast<float>(*v));
    if (n == "top-p") sp->set_top_p(static_cast<float>(*v));
    if (n == "min-p") sp->set_min_p(static_cast<float>(*v));
  }
  if (args.Has("top-k")) {
    auto k = args.GetInt("top-k", 0);
    if (!k.ok()) return k.status();
    sp->set_top_k(static_cast<int32_t>(*k));
  }
  if (args.Has("seed")) {
    auto s = args.GetInt("seed", 0);
    if (!s.ok()) return s.status();
    sp->set_seed(static_cast<uint64_t>(*s));
  }
  return absl::OkStatus();
}

int RunGenerate(const Args& args, TesseraClient& client) {
  v1::GenerateRequest req;
  if (absl::Status st = BuildGenerateRequest(args, &req); !st.ok()) return Usage(std::string(st.message()));
  const bool as_json = args.GetOr("json", "false") == "true";
  bool printed = false;
  auto result = client.Generate(req, [&](const v1::GenerateResponse& msg) {
    if (!as_json && !msg.text().empty()) {
      std::fwrite(msg.text().data(), 1, msg.text().size(), stdout);
      std::fflush(stdout);
      printed = true;
    }
    return true;
  });
  if (!result.ok()) {
    if (printed) std::fputc('\n', stdout);
    return Fail(1, std::string(result.status().message()));
  }
  if (as_json) {
    json out = {{"text", result->text},
                {"token_ids", result->token_ids},
                {"finish_reason", FinishReasonName(result->finish_reason)},
                {"usage",
                 {{"prompt_tokens", result->usage.prompt_tokens()},
                  {"completion_tokens", result->usage.completion_tokens()},
                  {"cached_prompt_tokens", result->usage.cached_prompt_tokens()}}},
                {"request_id", result->request_id}};
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::fputc('\n', stdout);
  }
  return 0;
}

int RunTokenize(const Args& args, TesseraClient& client) {
  if (!args.Has("text")) return Usage("tokenize needs --text");
  const bool special = args.GetOr("add-special-tokens", "true") == "true";
  auto r = client.Tokenize(*args.Get("text"), special, args.GetOr("model", ""));
  if (!r.ok()) return Fail(1, std::string(r.status().message()));
  if (args.GetOr("json", "false") == "true") {
    json out = {{"ids", std::vector<int32_t>(r->ids().begin(), r->ids().end())},
                {"pieces", std::vector<std::string>(r->pieces().begin(), r->pieces().end())}};
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("%s\n", absl::StrJoin(r->ids(), " ").c_str());
  }
  return 0;
}

int RunModels(const Args& args, TesseraClient& client) {
  auto models = client.ListModels();
  if (!models.ok()) return Fail(1, std::string(models.status().message()));
  if (args.GetOr("json", "false") == "true") {
    json out = json::array();
    for (const auto& m : *models)
      out.push_back({{"id", m.id()}, {"kind", m.kind()}, {"parent", m.parent()}, {"max_model_len", m.max_model_len()}});
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  for (const auto& m : *models) {
    std::printf("%s\t%s\t%s\tmax_model_len=%u\n", m.id().c_str(), m.kind().c_str(),
                m.parent().empty() ? "-" : m.parent().c_str(), m.max_model_len());
  }
  return 0;
}

int PrintOrFail(const absl::StatusOr<std::string>& r) {
  if (!r.ok()) return Fail(1, std::string(r.status().message()));
  std::printf("%s\n", r->c_str());
  return 0;
}

int RunLoadLora(const Args& args, TesseraClient& client) {
  if (!args.Has("name") || !args.Has("path")) return Usage("load-lora needs --name and --path");
  return PrintOrFail(client.LoadLoraAdapter(*args.Get("name"), *args.Get("path"), Token(args)));
}

int RunUnloadLora(const Args& args, TesseraClient& client) {
  if (!args.Has("name")) return Usage("unload-lora needs --name");
  return PrintOrFail(client.UnloadLoraAdapter(*args.Get("name"), Token(args)));
}

struct Command {
  std::set<std::string> value_flags;
  std::set<std::string> switches;
  std::function<int(const Args&, TesseraClient&)> run;
};

const std::map<std::string, Command>& Commands() {
  static const auto* commands = new std::map<std::string, Command>{
      {"generate",
       {{"prompt", "max-tokens", "temperature", "top-p", "top-k", "min-p", "seed", "model", "adapter", "stop"},
        {"ignore-eos", "json"},
        RunGenerate}},
      {"tokenize", {{"text", "model"}, {"add-special-tokens", "json"}, RunTokenize}},
      {"models", {{}, {"json"}, RunModels}},
      {"load-lora", {{"name", "path", "token"}, {}, RunLoadLora}},
      {"unload-lora", {{"name", "token"}, {}, RunUnloadLora}},
      {"drift-stats",
       {{"model", "adapter", "token"}, {},
        [](const Args& a, TesseraClient& c) {
          return PrintOrFail(c.GetDriftStats(Token(a), a.GetOr("model", ""), a.GetOr("adapter", "")));
        }}},
      {"drift-baseline",
       {{"model", "adapter", "token"}, {},
        [](const Args& a, TesseraClient& c) {
          return PrintOrFail(c.CaptureDriftBaseline(Token(a), a.GetOr("model", ""), a.GetOr("adapter", "")));
        }}},
      {"drift-reset",
       {{"model", "adapter", "token"}, {},
        [](const Args& a, TesseraClient& c) {
          return PrintOrFail(c.ResetDrift(Token(a), a.GetOr("model", ""), a.GetOr("adapter", "")));
        }}},
  };
  return *commands;
}

}  // namespace

int RunClientCli(const std::vector<std::string>& argv) {
  // The command is the first word that is neither a flag nor a global flag's value, so
  // --target may come before or after it.
  std::string command;
  std::vector<std::string> rest;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (command.empty() && (a == "--help" || a == "-h" || a == "help")) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (command.empty() && a.rfind("--", 0) != 0) {
      command = a;
      continue;
    }
    rest.push_back(a);
    if (command.empty() && kGlobalFlags.count(a.substr(2)) && i + 1 < argv.size()) rest.push_back(argv[++i]);
  }
  if (command.empty()) return Usage("no command given");
  auto it = Commands().find(command);
  if (it == Commands().end()) return Usage(absl::StrCat("unknown command '", command, "'"));
  std::set<std::string> value_flags = it->second.value_flags;
  value_flags.insert(kGlobalFlags.begin(), kGlobalFlags.end());
  std::set<std::string> switches = it->second.switches;
  switches.insert("help");
  auto args = Args::Parse(rest, value_flags, switches);
  if (!args.ok()) return Usage(std::string(args.status().message()));
  if (args->Has("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (!args->positional().empty()) return Usage(absl::StrCat("unexpected argument '", args->positional()[0], "'"));

  ClientOptions options;
  auto timeout = args->GetDouble("timeout", 0);
  if (!timeout.ok()) return Usage(std::string(timeout.status().message()));
  options.timeout_s = *timeout;
  if (absl::Status st = options.Validate(); !st.ok()) return Usage(std::string(st.message()));
  const std::string target = args->GetOr("target", EnvOr("TESSERA_TARGET", "127.0.0.1:50051"));
  auto client = TesseraClient::Connect(target, options);
  if (!client.ok()) return Usage(std::string(client.status().message()));
  return it->second.run(*args, **client);
}

}  // namespace tessera::client
