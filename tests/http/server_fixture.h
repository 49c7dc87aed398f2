// Shared test scaffolding: a real HttpServer on 127.0.0.1 with an ephemeral port and an
// access-log capture.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/http/http_server.h"
#include "tests/http/test_client.h"

namespace tessera::http::testing {

class LogCapture {
 public:
  AccessLogSink sink() {
    return [this](const AccessLogEntry& entry) {
      absl::MutexLock lock(&mu_);
      entries_.push_back(entry);
    };
  }
  // Entries once at least `n` arrived (the log is written after the last byte is sent,
  // so it can trail the client's read); fewer if that takes over 10 s.
  std::vector<AccessLogEntry> AwaitEntries(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return entries_.size() >= n; };
    mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(10));
    return entries_;
  }

 private:
  absl::Mutex mu_;
  std::vector<AccessLogEntry> entries_ ABSL_GUARDED_BY(mu_);
};

class ServerTest : public ::testing::Test {
 protected:
  HttpServerOptions DefaultOptions() {
    HttpServerOptions options;
    options.access_log = log_.sink();
    return options;
  }

  // Starts a server with `routes` registered; fails the test on error.
  void StartServer(HttpServerOptions options, const std::function<void(HttpServer&)>& routes) {
    server_ = std::make_unique<HttpServer>(std::move(options));
    routes(*server_);
    absl::Status status = server_->Start();
    ASSERT_TRUE(status.ok()) << status;
    ASSERT_NE(server_->port(), 0);
  }

  TestClient Connect(int receive_buffer_bytes = 0) {
    absl::StatusOr<TestClient> client =
        TestClient::Connect(server_->port(), 10, receive_buffer_bytes);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(*client) : TestClient();
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Now() + absl::Seconds(5));
  }

  LogCapture log_;
  std::unique_ptr<HttpServer> server_;
};

// Waits for a std::future-like flag set from another thread, with a generous bound.
class Notification {
 public:
  void Notify() {
    absl::MutexLock lock(&mu_);
    notified_ = true;
  }
  bool WaitFor(absl::Duration timeout = absl::Seconds(10)) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&notified_), timeout);
  }
  bool notified() {
    absl::MutexLock lock(&mu_);
    return notified_;
  }

 private:
  absl::Mutex mu_;
  bool notified_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace tessera::http::testing
