// Holds 1,000 SSE streams open at once on a server with two io threads; every client gets
// all of its events, in order.
#include <sys/resource.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "server/http/http_server.h"
#include "tests/http/server_fixture.h"
#include "tests/http/test_client.h"

namespace tessera::http::testing {
namespace {

constexpr size_t kStreams = 1000;
constexpr int kEventsPerStream = 20;

// Both ends of every connection live in this process.
bool EnsureFileLimit(rlim_t wanted) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return false;
  if (limit.rlim_cur >= wanted) return true;
  if (limit.rlim_max < wanted) return false;
  limit.rlim_cur = wanted;
  return setrlimit(RLIMIT_NOFILE, &limit) == 0;
}

class ConcurrencyTest : public ServerTest {};

TEST_F(ConcurrencyTest, HoldsAThousandStreamsWithTwoIoThreads) {
  if (!EnsureFileLimit(2 * kStreams + 256)) GTEST_SKIP() << "RLIMIT_NOFILE too low to test";
  absl::Mutex mu;
  std::vector<std::shared_ptr<ResponseWriter>> writers;
  HttpServerOptions options = DefaultOptions();
  options.num_threads = 2;
  options.access_log = nullptr;
  StartServer(options, [&](HttpServer& server) {
    ASSERT_TRUE(server
                    .Handle("POST", "/v1/completions",
                            [&](const HttpRequest&, std::shared_ptr<ResponseWriter> writer) {
                              writer->StartStream();
                              absl::MutexLock lock(&mu);
                              writers.push_back(std::move(writer));
                            })
                    .ok());
  });

  std::vector<TestClient> clients;
  clients.reserve(kStreams);
  for (size_t i = 0; i < kStreams; ++i) {
    absl::StatusOr<TestClient> client = TestClient::Connect(server_->port(), 30);
    ASSERT_TRUE(client.ok()) << "client " << i << ": " << client.status();
    ASSERT_TRUE(client->Send(BuildRequest("POST", "/v1/completions", "{\"stream\":true}")).ok());
    clients.push_back(std::move(*client));
  }
  {
    // Every stream is open before any event is produced: they are held simultaneously.
    absl::MutexLock lock(&mu);
    auto all_open = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return writers.size() == kStreams; };
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all_open), absl::Seconds(60)))
        << writers.size() << " streams open";
  }
  EXPECT_EQ(server_->num_connections(), kStreams);

  // Two producers interleave events across all streams, as a batching engine would.
  auto produce = [&](size_t first) {
    for (int e = 0; e < kEventsPerStream; ++e) {
      for (size_t s = first; s < kStreams; s += 2) {
        writers[s]->SendEvent("{\"stream\":" + std::to_string(s) +
                              ",\"token\":" + std::to_string(e) + "}");
      }
    }
    for (size_t s = first; s < kStreams; s += 2) writers[s]->EndStream();
  };
  std::thread even(produce, 0), odd(produce, 1);

  size_t complete = 0;
  for (size_t i = 0; i < kStreams; ++i) {
    absl::StatusOr<Response> response = clients[i].ReadResponse();
    ASSERT_TRUE(response.ok()) << "client " << i << ": " << response.status();
    std::vector<std::string> events = ParseSseEvents(response->body);
    ASSERT_EQ(events.size(), static_cast<size_t>(kEventsPerStream)) << "client " << i;
    // Stream ids are assigned in accept order, which need not match connect order; the
    // events of one stream must still be that stream's, in order.
    const std::string prefix = events[0].substr(0, events[0].find(",\"token\""));
    bool ordered = true;
    for (int e = 0; e < kEventsPerStream; ++e) {
      ordered = ordered && events[e] == prefix + ",\"token\":" + std::to_string(e) + "}";
    }
    EXPECT_TRUE(ordered) << "client " << i;
    complete += ordered ? 1 : 0;
  }
  even.join();
  odd.join();
  EXPECT_EQ(complete, kStreams);
}

}  // namespace
}  // namespace tessera::http::testing
