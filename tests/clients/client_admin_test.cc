// Admin commands of tessera-client against a real server with --admin-token: LoRA
// load/unload and drift statistics need the bearer token and take effect.
#include <filesystem>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model/config.h"
#include "tests/clients/client_test_util.h"
#include "tests/e2e/server_process.h"
#include "tests/lora/lora_test_util.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using json = nlohmann::json;
using testing::RunClient;

constexpr char kToken[] = "s3cret";

class ClientAdminTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string(testing::MakeTempDir("client_admin_root"));
    auto cfg = ModelConfig::FromFile(testing::DefaultModelDir() + "/config.json");
    ASSERT_TRUE(cfg.ok()) << cfg.status();
    auto adapter = testing::MakeRandomAdapter(*cfg, {});
    testing::WritePeftAdapter(*root_ + "/a", adapter.config_json, adapter.tensors);
    server_ = new testing::ServerProcess();
    ASSERT_TRUE(server_->Start({"--adapter-root", *root_, "--admin-token", kToken})) << server_->output();
  }
  static void TearDownTestSuite() {
    EXPECT_EQ(server_->Stop(SIGTERM), 0);
    delete server_;
    fs::remove_all(*root_);
    delete root_;
  }
  static std::vector<std::string> With(std::vector<std::string> args) {
    args.insert(args.begin(), {"--target", "127.0.0.1:" + std::to_string(server_->grpc_port())});
    return args;
  }
  static testing::ServerProcess* server_;
  static std::string* root_;
};
testing::ServerProcess* ClientAdminTest::server_ = nullptr;
std::string* ClientAdminTest::root_ = nullptr;

TEST_F(ClientAdminTest, LoadLoraNeedsTheTokenThenServesTheAdapterUntilUnloaded) {
  auto r = RunClient(With({"load-lora", "--name", "a", "--path", "a"}), true);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, StartsWith("tessera-client: missing bearer token"));
  r = RunClient(With({"load-lora", "--name", "a", "--path", "a", "--token", "wrong"}), true);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("invalid admin token"));

  r = RunClient(With({"load-lora", "--name", "a", "--path", "a", "--token", kToken}), true);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("'a'"));
  r = RunClient(With({"models"}));
  EXPECT_THAT(r.out, HasSubstr("\na\tlora\t"));
  const std::vector<std::string> gen = {"generate", "--prompt", "Once upon a time", "--max-tokens", "12", "--temperature", "0"};
  auto base = RunClient(With(gen));
  std::vector<std::string> with_adapter = gen;
  with_adapter.insert(with_adapter.end(), {"--model", "a"});
  auto adapted = RunClient(With(with_adapter));
  EXPECT_EQ(base.exit_code, 0);
  EXPECT_EQ(adapted.exit_code, 0);
  EXPECT_NE(adapted.out, base.out);  // the adapter's random B changes the greedy text

  r = RunClient(With({"unload-lora", "--name", "a", "--token", kToken}), true);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(RunClient(With(with_adapter)).exit_code, 1);
  EXPECT_THAT(RunClient(With({"models"})).out, ::testing::Not(HasSubstr("\ta\tlora")));
}

TEST_F(ClientAdminTest, DriftCommandsNeedTheTokenAndPrintTheStatisticsJson) {
  EXPECT_EQ(RunClient(With({"drift-stats"})).exit_code, 1);
  auto r = RunClient(With({"drift-stats", "--token", kToken}));
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_TRUE(json::accept(r.out)) << r.out;
  r = RunClient(With({"drift-baseline", "--token", kToken}));
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_TRUE(json::accept(r.out)) << r.out;
  r = RunClient(With({"drift-reset", "--token", kToken}));
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_TRUE(json::accept(r.out)) << r.out;
}

}  // namespace
}  // namespace tessera
