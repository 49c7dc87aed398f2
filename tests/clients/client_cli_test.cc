// The C++ client and the tessera-client CLI against a real `tessera serve` on the default
// model: greedy generation equals the golden vectors and the HTTP API, tokenize, models, errors.
#include <algorithm>
#include <string>
#include <vector>

#include "clients/cpp/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/clients/client_test_util.h"
#include "tests/e2e/server_process.h"
#include "tests/http/test_client.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using json = nlohmann::json;
using testing::RunClient;

class ClientCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new testing::ServerProcess();
    ASSERT_TRUE(server_->Start()) << server_->output();
  }
  static void TearDownTestSuite() {
    EXPECT_EQ(server_->Stop(SIGTERM), 0);
    delete server_;
  }
  static std::string Target() { return "127.0.0.1:" + std::to_string(server_->grpc_port()); }

  // The text of a greedy non-streamed /v1/completions.
  static std::string HttpCompletion(const std::string& prompt, int max_tokens) {
    auto client = http::testing::TestClient::Connect(static_cast<uint16_t>(server_->http_port()), 60);
    EXPECT_TRUE(client.ok()) << client.status();
    if (!client.ok()) return "";
    json body = {{"model", ServedModel()}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}};
    auto r = client->RoundTrip(http::testing::BuildRequest("POST", "/v1/completions", body.dump()));
    EXPECT_TRUE(r.ok() && r->status() == 200);
    return r.ok() ? json::parse(r->body)["choices"][0]["text"].get<std::string>() : "";
  }
  static std::string ServedModel() {
    auto client = client::TesseraClient::Connect(Target());
    auto models = (*client)->ListModels();
    EXPECT_TRUE(models.ok()) << models.status();
    return models.ok() && !models->empty() ? (*models)[0].id() : "";
  }

  static testing::ServerProcess* server_;
};
testing::ServerProcess* ClientCliTest::server_ = nullptr;

TEST_F(ClientCliTest, GenerateStreamsTheGreedyTextOfTheGoldenVectorsAndTheHttpApi) {
  for (const testing::GoldenCase& g : testing::LoadGoldenCases()) {
    SCOPED_TRACE(g.prompt);
    const std::string n = std::to_string(g.ids.size());
    auto r = RunClient({"--target", Target(), "generate", "--prompt", g.prompt, "--max-tokens", n, "--temperature", "0"});
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_EQ(r.out, g.continuation + "\n");
    EXPECT_EQ(r.out, HttpCompletion(g.prompt, static_cast<int>(g.ids.size())) + "\n");
  }
}

TEST_F(ClientCliTest, GenerateJsonReportsIdsFinishReasonAndUsage) {
  const testing::GoldenCase g = testing::LoadGoldenCases().back();
  // --target after the command works as well as before it.
  auto r = RunClient({"generate", "--prompt", g.prompt, "--max-tokens", std::to_string(g.ids.size()), "--temperature",
                      "0", "--json", "--target", Target()});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  json j = json::parse(r.out);
  EXPECT_EQ(j["text"], g.continuation);
  EXPECT_EQ(j["token_ids"].get<std::vector<int32_t>>(), g.ids);
  EXPECT_EQ(j["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["prompt_tokens"], g.prompt_ids.size());
  EXPECT_EQ(j["usage"]["completion_tokens"], g.ids.size());
}

TEST_F(ClientCliTest, LibraryGenerateDeliversChunksInOrderAndTheResultJoinsThem) {
  const testing::GoldenCase g = testing::LoadGoldenCases().back();
  auto client = client::TesseraClient::Connect(Target());
  ASSERT_TRUE(client.ok()) << client.status();
  v1::GenerateRequest req;
  req.set_prompt(g.prompt);
  req.set_max_tokens(static_cast<uint32_t>(g.ids.size()));
  req.mutable_sampling()->set_temperature(0);
  std::string streamed;
  int chunks = 0;
  auto result = (*client)->Generate(req, [&](const v1::GenerateResponse& msg) {
    streamed += msg.text();
    ++chunks;
    return true;
  });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_GT(chunks, 1);
  EXPECT_EQ(streamed, g.continuation);
  EXPECT_EQ(result->text, g.continuation);
  EXPECT_EQ(result->token_ids, g.ids);
  EXPECT_EQ(client::FinishReasonName(result->finish_reason), "length");
  EXPECT_EQ(result->usage.completion_tokens(), g.ids.size());
}

// A client that cancels, even after the final message was queued, leaves the server able to
// finish the call (and so to shut down at SIGTERM).
TEST_F(ClientCliTest, CallbackReturningFalseCancelsAndTheNextCallSucceeds) {
  auto client = client::TesseraClient::Connect(Target());
  ASSERT_TRUE(client.ok());
  v1::GenerateRequest req;
  req.set_prompt("Once upon a time");
  req.set_max_tokens(400);
  req.set_ignore_eos(true);
  int chunks = 0;
  auto cancelled = (*client)->Generate(req, [&](const v1::GenerateResponse&) { return ++chunks < 2; });
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(chunks, 2);
  req.set_max_tokens(4);
  auto next = (*client)->Generate(req);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->token_ids.size(), 4u);
}

TEST_F(ClientCliTest, TokenizePrintsThePromptIdsWithAndWithoutBos) {
  for (const testing::GoldenCase& g : testing::LoadGoldenCases()) {
    if (g.prompt.empty()) continue;
    SCOPED_TRACE(g.prompt);
    std::string with_bos, without_bos;
    for (size_t i = 0; i < g.prompt_ids.size(); ++i) {
      with_bos += (i ? " " : "") + std::to_string(g.prompt_ids[i]);
      if (i > 0) without_bos += (i > 1 ? " " : "") + std::to_string(g.prompt_ids[i]);
    }
    auto r = RunClient({"--target", Target(), "tokenize", "--text", g.prompt});
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_EQ(r.out, with_bos + "\n");
    r = RunClient({"--target", Target(), "tokenize", "--text", g.prompt, "--add-special-tokens=false"});
    EXPECT_EQ(r.out, without_bos + "\n");
    r = RunClient({"--target", Target(), "tokenize", "--text", g.prompt, "--json"});
    json j = json::parse(r.out);
    EXPECT_EQ(j["ids"].get<std::vector<int32_t>>(), g.prompt_ids);
    EXPECT_EQ(j["pieces"].size(), g.prompt_ids.size());
  }
}

TEST_F(ClientCliTest, ModelsListsTheServedBaseModelAsTheHttpApiDoes) {
  auto http = http::testing::TestClient::Connect(static_cast<uint16_t>(server_->http_port()), 30);
  ASSERT_TRUE(http.ok());
  auto listed = http->RoundTrip(http::testing::BuildRequest("GET", "/v1/models", ""));
  ASSERT_TRUE(listed.ok());
  const json data = json::parse(listed->body)["data"];
  ASSERT_EQ(data.size(), 1u);
  const std::string id = data[0]["id"];
  const int max_len = data[0]["max_model_len"];
  auto r = RunClient({"--target", Target(), "models"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, id + "\tbase\t-\tmax_model_len=" + std::to_string(max_len) + "\n");
  r = RunClient({"--target", Target(), "models", "--json"});
  json j = json::parse(r.out);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["id"], id);
  EXPECT_EQ(j[0]["kind"], "base");
}

TEST_F(ClientCliTest, UnreachableTargetExitsOneWithOneClearLine) {
  for (const char* command : {"models", "tokenize", "generate"}) {
    SCOPED_TRACE(command);
    std::vector<std::string> args = {"--target", "127.0.0.1:1", command};
    if (std::string(command) == "tokenize") args.insert(args.end(), {"--text", "x"});
    if (std::string(command) == "generate") args.insert(args.end(), {"--prompt", "x"});
    auto r = RunClient(args, /*with_stderr=*/true);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_THAT(r.out, StartsWith("tessera-client: cannot reach the tessera server at 127.0.0.1:1"));
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  }
}

TEST_F(ClientCliTest, ServerRefusalsExitOneWithTheServersMessage) {
  auto r = RunClient({"--target", Target(), "generate", "--prompt", "x", "--model", "no-such-model"}, true);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("no-such-model"));
  r = RunClient({"--target", Target(), "generate", "--prompt", std::string(3000, 'a')}, true);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, StartsWith("tessera-client: This model's maximum context length is 512 tokens"));
  r = RunClient({"--target", Target(), "generate", "--prompt", "x", "--top-p", "5"}, true);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, StartsWith("tessera-client: top_p"));
}

TEST_F(ClientCliTest, UsageErrorsExitTwo) {
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"frobnicate"},
      {"generate"},
      {"generate", "--prompt", "x", "--max-tokens", "many"},
      {"generate", "--prompt", "x", "--no-such-flag", "1"},
      {"tokenize"},
      {"load-lora", "--name", "a"},
      {"--timeout", "-1", "models"},
  };
  for (const auto& args : cases) {
    std::vector<std::string> full = {"--target", Target()};
    full.insert(full.end(), args.begin(), args.end());
    auto r = RunClient(full, true);
    EXPECT_EQ(r.exit_code, 2) << ::testing::PrintToString(args) << " -> " << r.out;
    EXPECT_THAT(r.out, StartsWith("tessera-client: "));
  }
  auto help = RunClient({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("usage: tessera-client"));
}

}  // namespace
}  // namespace tessera
