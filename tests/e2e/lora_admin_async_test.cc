// The HTTP admin routes load and unload adapters on the admin's own thread: while a load
// waits there, the server's only io thread keeps serving other requests, and the load's
// answer comes once it has run.
#include <atomic>
#include <filesystem>
#include <future>
#include <thread>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/common/serial_executor.h"
#include "runtime/model/config.h"
#include "server/admin/lora_admin.h"
#include "tests/http/server_fixture.h"
#include "tests/lora/lora_test_util.h"
#include "tests/testing/paths.h"

namespace tessera {
namespace {

using http::testing::BuildRequest;
using json = nlohmann::json;

class LoraAdminAsyncTest : public http::testing::ServerTest {
 protected:
  void SetUp() override {
    config_ = *ModelConfig::FromFile(testing::DefaultModelDir() + "/config.json");
    root_ = testing::MakeTempDir("lora_admin_async");
    auto adapter = testing::MakeRandomAdapter(config_, testing::RandomAdapterSpec{});
    testing::WritePeftAdapter(root_ + "/a", adapter.config_json, adapter.tensors);
    backend_ = std::move(*CreateBackend("cpu"));
    registry_ = std::move(*LoraRegistry::Create(backend_.get(), config_, LoraRegistryOptions{}));
  }
  void TearDown() override {
    ServerTest::TearDown();
    std::filesystem::remove_all(root_);
  }

  ModelConfig config_;
  std::string root_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<LoraRegistry> registry_;
};

TEST_F(LoraAdminAsyncTest, LoadWaitingOnTheAdminThreadLeavesTheIoThreadServing) {
  AdminAuth auth("");  // loopback clients only
  SerialExecutor worker;
  LoraAdmin admin(registry_.get(), root_, &auth, &worker);
  http::HttpServerOptions options = DefaultOptions();
  options.num_threads = 1;  // one io thread: a handler that blocked it would stall everything
  StartServer(options, [&](http::HttpServer& s) {
    ASSERT_TRUE(admin.RegisterRoutes(s).ok());
    ASSERT_TRUE(s.Handle("GET", "/ping", [](const http::HttpRequest&, std::shared_ptr<http::ResponseWriter> w) {
                   w->Send(200, "text/plain", "pong");
                 }).ok());
  });

  // Hold the admin thread so that the load queues behind this task.
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  worker.Post([gate] { gate.wait(); });

  std::atomic<bool> load_answered{false};
  std::thread loader([&] {
    http::testing::TestClient client = Connect();
    auto r = client.RoundTrip(BuildRequest("POST", "/v1/load_lora_adapter",
                                           json{{"lora_name", "a"}, {"lora_path", "a"}}.dump(), {}));
    load_answered = true;
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->status(), 200) << r->body;
  });

  // The io thread answers other requests while the load waits.
  for (int i = 0; i < 3; ++i) {
    http::testing::TestClient client = Connect();
    auto r = client.RoundTrip(BuildRequest("GET", "/ping", "", {}));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->body, "pong");
  }
  EXPECT_FALSE(load_answered.load());  // the load has not run: the admin thread is held
  EXPECT_FALSE(registry_->Resolve("a").ok());

  release.set_value();
  loader.join();
  EXPECT_TRUE(load_answered.load());
  EXPECT_TRUE(registry_->Resolve("a").ok());

  // Errors come back the same way: a path outside the root is refused with 400.
  http::testing::TestClient client = Connect();
  auto bad = client.RoundTrip(BuildRequest("POST", "/v1/load_lora_adapter",
                                           json{{"lora_name", "b"}, {"lora_path", "../x"}}.dump(), {}));
  ASSERT_TRUE(bad.ok()) << bad.status();
  EXPECT_EQ(bad->status(), 400) << bad->body;
  auto unload = client.RoundTrip(BuildRequest("POST", "/v1/unload_lora_adapter", json{{"lora_name", "a"}}.dump(), {}));
  ASSERT_TRUE(unload.ok()) << unload.status();
  EXPECT_EQ(unload->status(), 200) << unload->body;
  EXPECT_FALSE(registry_->Resolve("a").ok());
}

}  // namespace
}  // namespace tessera
