// LoRA through the server: adapters preloaded and hot-loaded over the admin API, requests
// selecting them by `model`, path and token checks, unloading.
#include <filesystem>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model/config.h"
#include "tests/e2e/server_process.h"
#include "tests/http/test_client.h"
#include "tests/lora/lora_test_util.h"
#include "tests/testing/subprocess.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using http::testing::BuildRequest;
using http::testing::ParseSseEvents;
using http::testing::TestClient;
using json = nlohmann::json;

http::testing::Response Call(int port, const std::string& path, const std::string& body,
                             const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  auto client = TestClient::Connect(static_cast<uint16_t>(port), 60);
  EXPECT_TRUE(client.ok());
  auto r = client->RoundTrip(BuildRequest(body.empty() ? "GET" : "POST", path, body, headers));
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : http::testing::Response{};
}

std::string Complete(int port, const std::string& model, int max_tokens, int* status = nullptr) {
  json body = {{"model", model}, {"prompt", "Once upon a time"}, {"max_tokens", max_tokens}, {"temperature", 0}};
  auto r = Call(port, "/v1/completions", body.dump());
  if (status) *status = r.status();
  if (r.status() != 200) return "";
  return json::parse(r.body)["choices"][0]["text"];
}

class LoraE2ETest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string(testing::MakeTempDir("lora_e2e_root"));
    merged_ = new std::string(testing::MakeTempDir("lora_e2e_merged"));
    auto cfg = *ModelConfig::FromFile(testing::DefaultModelDir() + "/config.json");
    for (unsigned seed : {1u, 2u}) {
      testing::RandomAdapterSpec spec;
      spec.seed = seed;
      auto adapter = testing::MakeRandomAdapter(cfg, spec);
      testing::WritePeftAdapter(*root_ + "/a" + std::to_string(seed), adapter.config_json, adapter.tensors);
      if (seed == 1) testing::WriteMergedModel(testing::DefaultModelDir(), adapter, *merged_ + "/m1");
    }
    server_ = new testing::ServerProcess();
    ASSERT_TRUE(server_->Start({"--adapter-root", *root_, "--lora-modules", "a1=" + *root_ + "/a1", "--max-num-seqs",
                                "128", "--max-gpu-adapters", "4"}))
        << server_->output();
  }
  static void TearDownTestSuite() {
    EXPECT_EQ(server_->Stop(SIGTERM), 0);
    delete server_;
    fs::remove_all(*root_);
    fs::remove_all(*merged_);
  }
  static int port() { return server_->http_port(); }
  static testing::ServerProcess* server_;
  static std::string* root_;
  static std::string* merged_;
};
testing::ServerProcess* LoraE2ETest::server_ = nullptr;
std::string* LoraE2ETest::root_ = nullptr;
std::string* LoraE2ETest::merged_ = nullptr;

TEST_F(LoraE2ETest, AdapterRequestEqualsTheMergedModelAndDiffersFromBase) {
  const std::string with_adapter = Complete(port(), "a1", 30);
  const std::string base = Complete(port(), "stories260k", 30);
  EXPECT_NE(with_adapter, base);
  auto merged = testing::RunCommand(testing::TesseraBinary() + " generate --model " + *merged_ +
                                    "/m1 --prompt 'Once upon a time' --temperature 0 --max-tokens 30 --json 2>/dev/null");
  ASSERT_EQ(merged.exit_code, 0) << merged.out;
  EXPECT_EQ(with_adapter, json::parse(merged.out)["text"].get<std::string>());
  auto models = json::parse(Call(port(), "/v1/models", "").body);
  ASSERT_EQ(models["data"].size(), 2u);
  EXPECT_EQ(models["data"][1]["id"], "a1");
  EXPECT_EQ(models["data"][1]["parent"], "stories260k");
}

TEST_F(LoraE2ETest, HotLoadWhileAHundredStreamsRunFailsNone) {
  std::vector<std::thread> streams;
  std::atomic<int> ok{0};
  for (int i = 0; i < 100; ++i) {
    streams.emplace_back([&, i] {
      json body = {{"model", i % 2 ? "a1" : "stories260k"}, {"prompt", "Zoo"}, {"max_tokens", 40},
                   {"temperature", 0}, {"stream", true}, {"ignore_eos", true}};
      auto r = Call(port(), "/v1/completions", body.dump());
      auto events = ParseSseEvents(r.body);
      if (r.status() == 200 && !events.empty() && events.back() == "[DONE]" && events.size() >= 3) ++ok;
    });
  }
  auto load = Call(port(), "/v1/load_lora_adapter", R"({"lora_name":"a2","lora_path":"a2"})");
  EXPECT_EQ(load.status(), 200) << load.body;
  int status = 0;
  const std::string a2 = Complete(port(), "a2", 20, &status);
  EXPECT_EQ(status, 200);
  EXPECT_NE(a2, Complete(port(), "stories260k", 20));
  for (auto& t : streams) t.join();
  EXPECT_EQ(ok.load(), 100);
}

TEST_F(LoraE2ETest, PathsOutsideTheRootAreRefusedAndLoadNothing) {
  const std::string outside = testing::MakeTempDir("lora_e2e_outside");
  fs::copy(*root_ + "/a1", outside + "/evil");
  fs::create_directory_symlink(outside + "/evil", *root_ + "/link_out");
  for (const std::string& path : {std::string("../lora_e2e_outside/evil"), outside + "/evil", std::string("link_out"),
                                  std::string("missing")}) {
    json body = {{"lora_name", "bad"}, {"lora_path", path}};
    auto r = Call(port(), "/v1/load_lora_adapter", body.dump());
    EXPECT_EQ(r.status(), 400) << path << " " << r.body;
  }
  int status = 0;
  Complete(port(), "bad", 2, &status);
  EXPECT_EQ(status, 404);
  fs::remove(*root_ + "/link_out");
  fs::remove_all(outside);
}

TEST_F(LoraE2ETest, UnloadedAdapterIsNotFoundForNewRequests) {
  ASSERT_EQ(Call(port(), "/v1/load_lora_adapter", R"({"lora_name":"tmp","lora_path":"a2"})").status(), 200);
  int status = 0;
  Complete(port(), "tmp", 2, &status);
  EXPECT_EQ(status, 200);
  EXPECT_EQ(Call(port(), "/v1/unload_lora_adapter", R"({"lora_name":"tmp"})").status(), 200);
  Complete(port(), "tmp", 2, &status);
  EXPECT_EQ(status, 404);
  EXPECT_EQ(Call(port(), "/v1/unload_lora_adapter", R"({"lora_name":"tmp"})").status(), 404);
}

TEST(LoraAdminAuthTest, AdminRoutesNeedTheBearerToken) {
  const std::string root = testing::MakeTempDir("lora_e2e_auth");
  auto cfg = *ModelConfig::FromFile(testing::DefaultModelDir() + "/config.json");
  auto adapter = testing::MakeRandomAdapter(cfg, {});
  testing::WritePeftAdapter(root + "/a", adapter.config_json, adapter.tensors);
  testing::ServerProcess server;
  ASSERT_TRUE(server.Start({"--adapter-root", root, "--admin-token", "tok"}));
  const std::string body = R"({"lora_name":"a","lora_path":"a"})";
  EXPECT_EQ(Call(server.http_port(), "/v1/load_lora_adapter", body).status(), 401);
  EXPECT_EQ(Call(server.http_port(), "/v1/load_lora_adapter", body, {{"Authorization", "Bearer nope"}}).status(), 401);
  EXPECT_EQ(Call(server.http_port(), "/v1/load_lora_adapter", body, {{"Authorization", "Bearer tok"}}).status(), 200);
  EXPECT_EQ(server.Stop(SIGTERM), 0);
  fs::remove_all(root);
}

}  // namespace
}  // namespace tessera
