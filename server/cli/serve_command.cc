// `tessera serve`: the daemon. Loads the model, starts the engine and the listeners, and
// on SIGTERM/SIGINT drains: refuses new requests, lets in-flight ones finish up to
// --drain-timeout, then exits 0.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "server/cli/args.h"
#include "server/cli/commands.h"
#include "server/cli/engine_flags.h"
#include "server/core/serving_context.h"
#include "server/grpc/grpc_server.h"
#include "server/http/http_server.h"
#include "server/openai/openai_api.h"
#include "server/admin/admin_auth.h"
#include "server/drift/drift_exporter.h"
#include "server/admin/lora_admin.h"
#include "server/grpc/admin_service.h"
#include "runtime/lora/lora_registry.h"
#include "absl/strings/str_split.h"
#include "server/metrics/metrics.h"

namespace tessera::cli {
namespace {

constexpr char kServeHelp[] =
    "usage: tessera serve [--model DIR] [flags]\n"
    "  --served-model-name NAME   name clients use in 'model' (default: the model directory's name)\n"
    "  --host 127.0.0.1  --port 8000  --grpc-port 50051 (0 picks a free port)\n"
    "  --max-body-bytes B         largest request body (default 1 MiB)\n"
    "  --max-waiting N            queued requests beyond which new ones are refused (default 512)\n"
    "  --drain-timeout S          seconds in-flight requests get after SIGTERM (default 30)\n"
    "  --chat-template llama2|plain (default: from tokenizer_config.json)\n"
    "  --admin-token T            bearer token for admin routes (without it: loopback clients only)\n"
    "  --drift-dir DIR            where drift baselines persist (default: memory only)\n"
    "  --drift-reference-size N   requests in a drift reference window (default 1000)\n"
    "  --drift-live-size N        requests in the live window (default 1000)\n"
    "  --drift-live-seconds S     also drop live requests older than S seconds (default: off)\n"
    "  --drift-bins N             reference-quantile bins per feature (default 10)\n"
    "  --disable-drift-monitoring\n"
    "  --enable-lora              serve LoRA adapters (implied by the next two flags)\n"
    "  --lora-modules NAME=DIR[,NAME=DIR...]   adapters loaded at start (repeatable)\n"
    "  --adapter-root DIR         adapters loadable at run time must resolve inside DIR\n"
    "  --max-gpu-adapters 8  --max-cpu-adapters 32  --max-lora-rank 64\n";

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "tessera serve: %s\n", message.c_str());
  return code;
}

}  // namespace

int RunServe(const std::vector<std::string>& argv) {
  // Signals are taken by sigwait in this thread only: block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::set<std::string> value_flags = {"served-model-name", "host", "port", "grpc-port", "max-body-bytes", "max-waiting", "drain-timeout",
                                       "chat-template", "admin-token", "drift-dir", "drift-reference-size",
                                       "drift-live-size", "drift-live-seconds", "drift-bins", "lora-modules",
                                       "adapter-root", "max-gpu-adapters", "max-cpu-adapters", "max-lora-rank"};
  std::set<std::string> switches = {"help", "disable-drift-monitoring", "enable-lora"};
  AddEngineFlags(&value_flags, &switches);
  auto parsed = Args::Parse(argv, value_flags, switches);
  if (!parsed.ok()) return Fail(2, std::string(parsed.status().message()) + "\n" + kServeHelp + kEngineFlagsHelp);
  const Args& args = *parsed;
  if (args.Has("help")) {
    std::fputs(kServeHelp, stdout);
    std::fputs(kEngineFlagsHelp, stdout);
    return 0;
  }
  auto engine_opts = ParseEngineOptions(args);
  if (!engine_opts.ok()) return Fail(2, std::string(engine_opts.status().message()));
  ServerOptions server_opts;
  auto max_waiting = args.GetInt("max-waiting", server_opts.max_waiting);
  auto drain = args.GetDouble("drain-timeout", server_opts.drain_timeout_s);
  auto grpc_port = args.GetInt("grpc-port", 50051);
  auto http_port = args.GetInt("port", 8000);
  auto max_body = args.GetInt("max-body-bytes", 1 << 20);
  for (const absl::Status& st : {max_waiting.status(), drain.status(), grpc_port.status(), http_port.status(), max_body.status()}) {
    if (!st.ok()) return Fail(2, std::string(st.message()));
  }
  server_opts.max_waiting = static_cast<int32_t>(*max_waiting);
  server_opts.drain_timeout_s = *drain;
  const std::string host = args.GetOr("host", "127.0.0.1");
  if (*http_port < 0 || *http_port > 65535 || *grpc_port < 0 || *grpc_port > 65535) return Fail(2, "ports must be in [0, 65535]");
  http::HttpServerOptions http_opts;
  http_opts.host = host;
  http_opts.port = static_cast<uint16_t>(*http_port);
  http_opts.max_body_bytes = static_cast<size_t>(*max_body);
  if (absl::Status st = http_opts.Validate(); !st.ok()) return Fail(2, std::string(st.message()));

  if (absl::Status st = ValidateModelFlags(args); !st.ok()) return Fail(2, std::string(st.message()));
  auto loaded = LoadModelFromFlags(args);
  if (!loaded.ok()) return Fail(1, std::string(loaded.status().message()));
  std::string name = loaded->dir;
  while (name.size() > 1 && name.back() == '/') name.pop_back();
  name = name.substr(name.find_last_of('/') + 1);
  server_opts.served_model_name = args.GetOr("served-model-name", name);
  if (absl::Status st = server_opts.Validate(); !st.ok()) return Fail(2, std::string(st.message()));
  ChatTemplateKind chat = DetectChatTemplate(loaded->dir);
  if (args.Has("chat-template")) {
    auto kind = ParseChatTemplateKind(*args.Get("chat-template"));
    if (!kind.ok()) return Fail(2, std::string(kind.status().message()));
    chat = *kind;
  }

  drift::DriftMonitorOptions drift_opts;
  {
    auto ref = args.GetInt("drift-reference-size", drift_opts.reference_size);
    auto live = args.GetInt("drift-live-size", drift_opts.live_size);
    auto secs = args.GetDouble("drift-live-seconds", 0.0);
    auto bins = args.GetInt("drift-bins", drift_opts.num_bins);
    for (const absl::Status& st : {ref.status(), live.status(), secs.status(), bins.status()}) {
      if (!st.ok()) return Fail(2, std::string(st.message()));
    }
    drift_opts.reference_size = *ref;
    drift_opts.live_size = *live;
    drift_opts.live_seconds = *secs;
    drift_opts.num_bins = static_cast<int>(*bins);
    drift_opts.drift_dir = args.GetOr("drift-dir", "");
    if (absl::Status st = drift_opts.Validate(); !st.ok()) return Fail(2, std::string(st.message()));
  }
  const bool drift_enabled = !args.Has("disable-drift-monitoring");
  std::unique_ptr<drift::DriftMonitor> monitor;
  if (drift_enabled) {
    auto m = drift::DriftMonitor::Create(drift_opts);
    if (!m.ok()) return Fail(1, "drift monitor: " + std::string(m.status().message()));
    monitor = std::move(*m);
  }
  AdminAuth admin_auth(args.GetOr("admin-token", ""));

  // LoRA: a slot registry when adapters are asked for.
  std::unique_ptr<LoraRegistry> lora;
  const bool lora_enabled = args.Has("enable-lora") || args.Has("lora-modules") || args.Has("adapter-root");
  if (lora_enabled) {
    LoraRegistryOptions lo;
    auto gpu = args.GetInt("max-gpu-adapters", lo.max_gpu_adapters);
    auto cpu = args.GetInt("max-cpu-adapters", lo.max_cpu_adapters);
    auto rank = args.GetInt("max-lora-rank", lo.max_lora_rank);
    for (const absl::Status& st : {gpu.status(), cpu.status(), rank.status()}) {
      if (!st.ok()) return Fail(2, std::string(st.message()));
    }
    lo.max_gpu_adapters = static_cast<int32_t>(*gpu);
    lo.max_cpu_adapters = static_cast<int32_t>(*cpu);
    lo.max_lora_rank = static_cast<int32_t>(*rank);
    if (absl::Status st = lo.Validate(); !st.ok()) return Fail(2, std::string(st.message()));
    auto reg = LoraRegistry::Create(loaded->backend.get(), loaded->model->config(), lo);
    if (!reg.ok()) return Fail(1, "LoRA: " + std::string(reg.status().message()));
    lora = std::move(*reg);
    for (const std::string& flag : args.GetAll("lora-modules")) {
      for (absl::string_view item : absl::StrSplit(flag, ',', absl::SkipEmpty())) {
        std::vector<std::string> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
        if (kv.size() != 2 || kv[0].empty() || kv[1].empty())
          return Fail(2, "--lora-modules expects NAME=DIR, got '" + std::string(item) + "'");
        auto id = lora->Load(kv[0], kv[1]);
        if (!id.ok()) return Fail(1, "--lora-modules " + kv[0] + ": " + std::string(id.status().message()));
        std::fprintf(stderr, "tessera serve: loaded LoRA adapter '%s' from %s\n", kv[0].c_str(), kv[1].c_str());
      }
    }
  }

  auto engine = Engine::Create(loaded->model.get(), loaded->tokenizer.get(), *engine_opts, lora.get());
  if (!engine.ok()) return Fail(1, std::string(engine.status().message()));
  ServingMetrics metrics(server_opts.served_model_name);
  (*engine)->SetStepObserver([&metrics](const StepInfo& step) { metrics.RecordStep(step); });
  ServingContext ctx(engine->get(), loaded->tokenizer.get(), chat, server_opts, &metrics);
  if (lora) {
    LoraRegistry* reg = lora.get();
    ctx.SetAdapterResolver([reg](const std::string& name) { return reg->Resolve(name); });
    ctx.SetAdapterLister([reg] {
      std::vector<std::string> names;
      for (const auto& info : reg->List()) names.push_back(info.name);
      return names;
    });
  }
  if (absl::Status st = ctx.RunReadinessProbe(); !st.ok()) return Fail(1, "readiness probe failed: " + std::string(st.message()));

  http::HttpServer http_server(http_opts);
  OpenAiApi api(&ctx);
  if (absl::Status st = api.Register(http_server); !st.ok()) return Fail(1, std::string(st.message()));
  std::unique_ptr<DriftExporter> drift_exporter;
  if (monitor) {
    drift_exporter = std::make_unique<DriftExporter>(monitor.get(), &ctx, &admin_auth,
                                                     static_cast<int32_t>(loaded->model->config().vocab_size));
    drift_exporter->Attach();
    metrics.AddCollector([&] { drift_exporter->Refresh(); });
    if (absl::Status st = drift_exporter->RegisterRoutes(http_server); !st.ok()) return Fail(1, std::string(st.message()));
  }
  std::unique_ptr<LoraAdmin> lora_admin;
  if (lora) {
    lora_admin = std::make_unique<LoraAdmin>(lora.get(), args.GetOr("adapter-root", ""), &admin_auth);
    if (absl::Status st = lora_admin->RegisterRoutes(http_server); !st.ok()) return Fail(1, std::string(st.message()));
  }
  if (absl::Status st = http_server.Start(); !st.ok()) return Fail(1, std::string(st.message()));
  AdminService admin_service(&admin_auth, lora_admin.get(), drift_exporter.get());
  auto grpc_server = GrpcServer::Start(&ctx, host, static_cast<int>(*grpc_port), {&admin_service});
  if (!grpc_server.ok()) return Fail(1, std::string(grpc_server.status().message()));
  std::printf("serving model '%s' on %s (%d KV blocks of %d tokens, max model length %d)\n",
              server_opts.served_model_name.c_str(), loaded->backend->name().c_str(), (*engine)->num_kv_blocks(),
              engine_opts->block_size, (*engine)->max_model_len());
  std::printf("listening http %s:%d\n", host.c_str(), http_server.port());
  std::printf("listening grpc %s:%d\n", host.c_str(), (*grpc_server)->port());
  std::fflush(stdout);

  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "tessera serve: signal %d, draining (up to %.0f s)\n", sig, server_opts.drain_timeout_s);
  ctx.StartDraining();
  http_server.StopAccepting();
  (*grpc_server)->SetServing(false);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(server_opts.drain_timeout_s);
  while ((*engine)->Stats().num_in_flight > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const int left = (*engine)->Stats().num_in_flight;
  (*grpc_server)->Shutdown(0.5);
  http_server.Shutdown(absl::Now() + absl::Milliseconds(500));
  engine->reset();  // aborts whatever is left
  std::fprintf(stderr, "tessera serve: stopped (%d request(s) cut off at the drain deadline)\n", left);
  return 0;
}

}  // namespace tessera::cli
