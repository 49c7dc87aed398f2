// End to end: a real `tessera serve` on loopback with the default model, driven over HTTP
// (OpenAI API) and gRPC as clients would.
#include <fstream>
#include <regex>
#include <thread>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tessera/v1/inference.grpc.pb.h"
#include "tests/e2e/server_process.h"
#include "tests/http/test_client.h"
#include "tests/testing/prometheus_text.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;
using http::testing::BuildRequest;
using http::testing::ParseSseEvents;
using http::testing::TestClient;
using json = nlohmann::json;
using testing::MetricValue;

struct Golden {
  std::string prompt;
  std::vector<int32_t> ids;
  std::string continuation;
};

std::vector<Golden> GoldenCases() {
  std::ifstream in(testing::DefaultModelDir() + "/expected_greedy.json");
  json j = json::parse(in);
  std::vector<Golden> out;
  for (const auto& c : j["cases"]) {
    const std::string prompt = c["prompt"];
    const std::string text = c["text"];
    out.push_back({prompt, c["generated_ids"].get<std::vector<int32_t>>(), text.substr(prompt.size())});
  }
  return out;
}

http::testing::Response Call(int port, const std::string& method, const std::string& path, const std::string& body = {},
                             const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  auto client = TestClient::Connect(static_cast<uint16_t>(port), 60);
  EXPECT_TRUE(client.ok()) << client.status();
  auto r = client->RoundTrip(BuildRequest(method, path, body, headers));
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : http::testing::Response{};
}

// The text of a streamed completion, or of a chat stream's deltas.
std::string StreamText(const std::string& body, bool* done) {
  std::string text;
  *done = false;
  for (const std::string& e : ParseSseEvents(body)) {
    if (e == "[DONE]") {
      *done = true;
      continue;
    }
    json j = json::parse(e);
    for (const auto& c : j["choices"]) {
      if (c.contains("text")) text += c["text"].get<std::string>();
      if (c.contains("delta") && c["delta"].contains("content")) text += c["delta"]["content"].get<std::string>();
    }
  }
  return text;
}

class ServeE2ETest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new testing::ServerProcess();
    ASSERT_TRUE(server_->Start({"--max-body-bytes", "65536", "--max-num-seqs", "64"})) << server_->output();
  }
  static void TearDownTestSuite() {
    EXPECT_EQ(server_->Stop(SIGTERM), 0);
    delete server_;
  }
  static int port() { return server_->http_port(); }
  static std::string Completion(const std::string& prompt, int max_tokens, bool stream, const std::string& extra = "") {
    json body = {{"model", "stories260k"}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0},
                 {"stream", stream}};
    std::string s = body.dump();
    if (!extra.empty()) s = s.substr(0, s.size() - 1) + "," + extra + "}";
    return s;
  }
  static testing::ServerProcess* server_;
};
testing::ServerProcess* ServeE2ETest::server_ = nullptr;

TEST_F(ServeE2ETest, GreedyCompletionsStreamedAndNotMatchExpectedGreedy) {
  for (const Golden& g : GoldenCases()) {
    SCOPED_TRACE(g.prompt);
    auto plain = Call(port(), "POST", "/v1/completions", Completion(g.prompt, static_cast<int>(g.ids.size()), false));
    ASSERT_EQ(plain.status(), 200) << plain.body;
    json j = json::parse(plain.body);
    EXPECT_EQ(j["choices"][0]["text"], g.continuation);
    EXPECT_EQ(j["usage"]["completion_tokens"], g.ids.size());
    auto streamed = Call(port(), "POST", "/v1/completions", Completion(g.prompt, static_cast<int>(g.ids.size()), true));
    ASSERT_EQ(streamed.status(), 200);
    EXPECT_THAT(streamed.Header("Content-Type"), HasSubstr("text/event-stream"));
    bool done = false;
    EXPECT_EQ(StreamText(streamed.body, &done), g.continuation);
    EXPECT_TRUE(done);
  }
}

TEST_F(ServeE2ETest, GrpcGenerateMatchesExpectedGreedyAndTokenizes) {
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->grpc_port()), grpc::InsecureChannelCredentials());
  auto stub = tessera::v1::Inference::NewStub(channel);
  for (const Golden& g : GoldenCases()) {
    grpc::ClientContext ctx;
    tessera::v1::GenerateRequest req;
    req.set_prompt(g.prompt);
    req.set_max_tokens(static_cast<uint32_t>(g.ids.size()));
    req.mutable_sampling()->set_temperature(0);
    auto reader = stub->Generate(&ctx, req);
    tessera::v1::GenerateResponse msg;
    std::vector<int32_t> ids;
    std::string text;
    tessera::v1::FinishReason finish = tessera::v1::FINISH_REASON_UNSPECIFIED;
    while (reader->Read(&msg)) {
      ids.insert(ids.end(), msg.token_ids().begin(), msg.token_ids().end());
      text += msg.text();
      if (msg.finish_reason() != tessera::v1::FINISH_REASON_UNSPECIFIED) finish = msg.finish_reason();
    }
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_EQ(ids, g.ids);
    EXPECT_EQ(text, g.continuation);
    EXPECT_EQ(finish, tessera::v1::FINISH_REASON_LENGTH);
  }
  {
    grpc::ClientContext ctx;
    tessera::v1::GenerateRequest req;
    req.set_prompt("Zoo");
    req.set_max_tokens(100000);
    auto reader = stub->Generate(&ctx, req);
    tessera::v1::GenerateResponse msg;
    while (reader->Read(&msg)) {
    }
    grpc::Status st = reader->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(st.error_message(), HasSubstr("maximum context length"));
  }
  grpc::ClientContext ctx;
  tessera::v1::TokenizeRequest treq;
  treq.set_text("Once upon a time");
  treq.set_add_special_tokens(true);
  tessera::v1::TokenizeResponse tresp;
  ASSERT_TRUE(stub->Tokenize(&ctx, treq, &tresp).ok());
  EXPECT_EQ(std::vector<int32_t>(tresp.ids().begin(), tresp.ids().end()), (std::vector<int32_t>{1, 403, 407, 261, 378}));
}

TEST_F(ServeE2ETest, TwoHundredConcurrentMixedRequestsAllComplete) {
  const std::vector<std::string> prompts = {"Once upon a time", "Zoo", "The little dog", "Lily and Ben", "One day"};
  std::vector<std::string> reference;
  for (const auto& p : prompts) {
    auto r = Call(port(), "POST", "/v1/completions", Completion(p, 24, false));
    reference.push_back(json::parse(r.body)["choices"][0]["text"]);
  }
  std::vector<std::string> got(200);
  std::vector<int> status(200);
  std::vector<std::thread> threads;
  for (int i = 0; i < 200; ++i) {
    threads.emplace_back([&, i] {
      const std::string& p = prompts[i % prompts.size()];
      const bool stream = i % 2 == 0;
      auto r = Call(port(), "POST", "/v1/completions", Completion(p, 24, stream));
      status[i] = r.status();
      bool done = true;
      got[i] = stream ? StreamText(r.body, &done) : json::parse(r.body)["choices"][0]["text"].get<std::string>();
      if (!done) got[i] += "<no [DONE]>";
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 200; ++i) {
    EXPECT_EQ(status[i], 200) << i;
    EXPECT_EQ(got[i], reference[i % prompts.size()]) << i;
  }
}

TEST_F(ServeE2ETest, ChatCompletionsUseTheTemplateAndStreamEqualsWhole) {
  const std::string body = R"({"model":"stories260k","messages":[{"role":"user","content":"Tell me a story"}],"max_tokens":12,"temperature":0)";
  auto whole = Call(port(), "POST", "/v1/chat/completions", body + "}");
  ASSERT_EQ(whole.status(), 200) << whole.body;
  json j = json::parse(whole.body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  auto streamed = Call(port(), "POST", "/v1/chat/completions", body + R"(,"stream":true,"stream_options":{"include_usage":true}})");
  bool done = false;
  EXPECT_EQ(StreamText(streamed.body, &done), j["choices"][0]["message"]["content"]);
  auto events = ParseSseEvents(streamed.body);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(json::parse(events[events.size() - 2])["usage"]["completion_tokens"], 12);
}

TEST_F(ServeE2ETest, NChoicesSeedsAndLogprobs) {
  auto r = Call(port(), "POST", "/v1/completions",
                R"({"model":"stories260k","prompt":"Zoo","max_tokens":6,"n":3,"temperature":1.0,"seed":5,"logprobs":2})");
  ASSERT_EQ(r.status(), 200) << r.body;
  json j = json::parse(r.body);
  ASSERT_EQ(j["choices"].size(), 3u);
  EXPECT_EQ(j["usage"]["completion_tokens"], 18);
  const json& lp = j["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"].size(), 6u);
  EXPECT_EQ(lp["top_logprobs"][0].size(), 2u);
  for (const auto& v : lp["token_logprobs"]) EXPECT_LE(v.get<double>(), 0.0);
  auto again = Call(port(), "POST", "/v1/completions",
                    R"({"model":"stories260k","prompt":"Zoo","max_tokens":6,"n":3,"temperature":1.0,"seed":5,"logprobs":2})");
  EXPECT_EQ(json::parse(again.body)["choices"], j["choices"]);
}

TEST_F(ServeE2ETest, BadInputsGetPrecise4xxAndTheNextRequestSucceeds) {
  struct Case {
    std::string body;
    int status;
    std::string message;
  };
  const std::string long_prompt(3000, 'a');
  std::vector<Case> cases = {
      {"{not json", 400, "not valid JSON"},
      {R"({"model":"nope","prompt":"x"})", 404, "does not exist"},
      {R"({"model":"stories260k","prompt":"x","max_tokens":-5})", 400, "max_tokens"},
      {R"({"model":"stories260k","prompt":"x","max_tokens":100000})", 400, "maximum context length"},
      {R"({"model":"stories260k","prompt":")" + long_prompt + R"("})", 400, "maximum context length"},
      {R"({"model":"stories260k","prompt":"x","n":50})", 400, "'n'"},
      {R"({"model":"stories260k","prompt":"x","temperature":"hot"})", 400, "temperature"},
      {R"({"model":"stories260k"})", 400, "prompt"},
      {R"({"model":"stories260k","messages":[]})", 400, "prompt"},
  };
  for (const Case& c : cases) {
    auto r = Call(port(), "POST", "/v1/completions", c.body);
    EXPECT_EQ(r.status(), c.status) << c.body.substr(0, 80) << " -> " << r.body;
    EXPECT_THAT(r.body, HasSubstr(c.message));
    EXPECT_TRUE(json::parse(r.body).contains("error"));
    auto ok = Call(port(), "POST", "/v1/completions", Completion("Zoo", 3, false));
    EXPECT_EQ(ok.status(), 200);
  }
  auto big = Call(port(), "POST", "/v1/completions", std::string(70000, ' '));
  EXPECT_EQ(big.status(), 413);
  auto headers = Call(port(), "GET", "/v1/models", "", {{"X-Big", std::string(20000, 'h')}});
  EXPECT_EQ(headers.status(), 431);
  EXPECT_EQ(Call(port(), "POST", "/v1/completions", Completion("Zoo", 3, false)).status(), 200);
  EXPECT_EQ(Call(port(), "GET", "/v1/nothing").status(), 404);
}

TEST_F(ServeE2ETest, ClientDisconnectMidStreamFreesItsKvBlocks) {
  auto client = TestClient::Connect(static_cast<uint16_t>(port()), 30);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(client->Send(BuildRequest("POST", "/v1/completions", Completion("Once upon a time", 500, true, R"("ignore_eos":true)"))).ok());
  auto head = client->ReadHead();
  ASSERT_TRUE(head.ok());
  ASSERT_TRUE(client->ReadChunk().ok());  // generation is under way
  client->Close();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  double usage = 1;
  double aborts = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    std::string m = Call(port(), "GET", "/metrics").body;
    usage = MetricValue(m, "tessera_kv_cache_usage_ratio{");
    aborts = MetricValue(m, "tessera_requests_total{adapter=\"\",model=\"stories260k\",outcome=\"abort\"}");
    if (usage == 0 && aborts >= 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(usage, 0);
  EXPECT_GE(aborts, 1);
}

TEST_F(ServeE2ETest, MetricsParseAsPrometheusTextAndCountersMove) {
  const std::string before = Call(port(), "GET", "/metrics").body;
  ASSERT_EQ(Call(port(), "POST", "/v1/completions", Completion("Zoo", 7, false)).status(), 200);
  auto r = Call(port(), "GET", "/metrics");
  EXPECT_THAT(r.Header("Content-Type"), HasSubstr("text/plain"));
  const std::regex sample(R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? -?[0-9.eE+-]+|NaN|\+Inf$)");
  std::istringstream in(r.body);
  int samples = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') {
      if (!line.empty()) EXPECT_TRUE(line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) << line;
      continue;
    }
    EXPECT_TRUE(std::regex_match(line, sample)) << line;
    ++samples;
  }
  EXPECT_GT(samples, 20);
  const std::string gen = "tessera_generation_tokens_total{adapter=\"\",model=\"stories260k\"}";
  EXPECT_GE(MetricValue(r.body, gen) - MetricValue(before, gen), 7);
  EXPECT_GE(MetricValue(r.body, "tessera_time_to_first_token_seconds_count"),
            MetricValue(before, "tessera_time_to_first_token_seconds_count") + 1);
  EXPECT_GT(MetricValue(r.body, "tessera_engine_step_seconds_count"), 0);
  // Step accounting by kind: 7 tokens took at least 7 steps (the CPU backend runs them
  // eagerly), and the forward share of step time is part of it.
  const auto moved = [&](const std::string& name) { return MetricValue(r.body, name) - MetricValue(before, name); };
  EXPECT_GE(moved("tessera_engine_steps_total{kind=\"eager\""), 7);
  EXPECT_GE(moved("tessera_engine_step_tokens_total{kind=\"eager\""), 7);
  const double step_s = MetricValue(r.body, "tessera_engine_step_seconds_total");
  const double forward_s = MetricValue(r.body, "tessera_engine_forward_seconds_total");
  EXPECT_GT(forward_s, 0);
  EXPECT_LE(forward_s, step_s);
  // Host phases: the outputs of those 7 tokens were made (detokenized) in some step.
  EXPECT_GT(moved("tessera_engine_host_seconds_total{kind=\"eager\",model=\"stories260k\",phase=\"outputs\""), 0);
  EXPECT_GT(moved("tessera_engine_host_seconds_total{kind=\"eager\",model=\"stories260k\",phase=\"schedule\""), 0);
  // Launching is part of the forwards; the CPU backend runs each op as it is called, so it
  // reports no separate device time.
  const double launch_s = MetricValue(r.body, "tessera_engine_host_seconds_total{kind=\"eager\",model=\"stories260k\",phase=\"launch\"");
  EXPECT_GT(moved("tessera_engine_host_seconds_total{kind=\"eager\",model=\"stories260k\",phase=\"launch\""), 0);
  EXPECT_LE(launch_s, forward_s);
  EXPECT_EQ(MetricValue(r.body, "tessera_engine_device_seconds_total{"), 0);
}

TEST_F(ServeE2ETest, HealthReadyModelsAndRequestIds) {
  EXPECT_EQ(Call(port(), "GET", "/health").status(), 200);
  EXPECT_EQ(Call(port(), "GET", "/ready").status(), 200);
  auto models = Call(port(), "GET", "/v1/models");
  EXPECT_EQ(json::parse(models.body)["data"][0]["id"], "stories260k");
  auto r = Call(port(), "POST", "/v1/completions", Completion("Zoo", 2, false), {{"X-Request-Id", "abc-123"}});
  EXPECT_EQ(r.Header("X-Request-Id"), "abc-123");
  EXPECT_EQ(json::parse(r.body)["id"], "cmpl-abc-123");
}

TEST(ServeBackPressureTest, QueueBeyondMaxWaitingGets429AndResourceExhausted) {
  testing::ServerProcess server;
  ASSERT_TRUE(server.Start({"--max-waiting", "0"})) << server.output();
  auto r = Call(server.http_port(), "POST", "/v1/completions", R"({"model":"stories260k","prompt":"x","max_tokens":2})");
  EXPECT_EQ(r.status(), 429);
  EXPECT_THAT(r.body, HasSubstr("rate_limit_error"));
  auto stub = tessera::v1::Inference::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(server.grpc_port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  tessera::v1::GenerateRequest req;
  req.set_prompt("x");
  auto reader = stub->Generate(&ctx, req);
  tessera::v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(server.Stop(SIGINT), 0);
}

TEST(ServeDrainTest, SigtermFinishesInFlightStreamsRefusesNewOnesAndExitsZero) {
  testing::ServerProcess server;
  ASSERT_TRUE(server.Start()) << server.output();
  auto stub = tessera::v1::Inference::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(server.grpc_port()), grpc::InsecureChannelCredentials()));
  auto client = TestClient::Connect(static_cast<uint16_t>(server.http_port()), 60);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(client->Send(BuildRequest("POST", "/v1/completions",
                                        R"({"model":"stories260k","prompt":"Once","max_tokens":480,"ignore_eos":true,"stream":true})"))
                  .ok());
  auto head = client->ReadHead();
  ASSERT_TRUE(head.ok());
  ASSERT_TRUE(client->ReadChunk().ok());
  std::thread stopper([&] { EXPECT_EQ(server.Stop(SIGTERM), 0); });
  // New work is refused once draining has begun.
  grpc::StatusCode code = grpc::StatusCode::OK;
  for (int i = 0; i < 500 && code == grpc::StatusCode::OK; ++i) {
    grpc::ClientContext ctx;
    tessera::v1::GenerateRequest req;
    req.set_prompt("x");
    req.set_max_tokens(1);
    auto reader = stub->Generate(&ctx, req);
    tessera::v1::GenerateResponse msg;
    while (reader->Read(&msg)) {
    }
    code = reader->Finish().error_code();
  }
  EXPECT_EQ(code, grpc::StatusCode::UNAVAILABLE);
  // The in-flight stream still runs to its end.
  std::string body;
  for (;;) {
    auto chunk = client->ReadChunk();
    ASSERT_TRUE(chunk.ok()) << chunk.status();
    if (chunk->empty()) break;
    body += *chunk;
  }
  auto events = ParseSseEvents(body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(json::parse(events[events.size() - 2])["choices"][0]["finish_reason"], "length");
  stopper.join();
}

}  // namespace
}  // namespace tessera
