// Server-Sent-Events streaming over real sockets: ordering and termination, disconnect
// detection (OnClose), harmless late writes, slow clients, drain and shutdown.
#include <atomic>
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

// Streams whose writers the test drives from its own thread, as the engine would.
class StreamRegistry {
 public:
  void Add(std::shared_ptr<ResponseWriter> writer) {
    absl::MutexLock lock(&mu_);
    writers_.push_back(std::move(writer));
  }
  // The writers once `n` streams started; empty if that takes over 10 s.
  std::vector<std::shared_ptr<ResponseWriter>> Await(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return writers_.size() >= n; };
    if (!mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(10))) return {};
    return writers_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::shared_ptr<ResponseWriter>> writers_ ABSL_GUARDED_BY(mu_);
};

class HttpStreamTest : public ServerTest {
 protected:
  void StartStreaming(HttpServerOptions options) {
    StartServer(std::move(options), [this](HttpServer& server) {
      ASSERT_TRUE(server
                      .Handle("POST", "/v1/completions",
                              [this](const HttpRequest&, std::shared_ptr<ResponseWriter> writer) {
                                writer->OnClose([this] { closed_.Notify(); });
                                writer->StartStream(200, {{"X-Stream", "1"}});
                                streams_.Add(std::move(writer));
                              })
                      .ok());
      ASSERT_TRUE(server
                      .Handle("GET", "/health",
                              [](const HttpRequest&, std::shared_ptr<ResponseWriter> writer) {
                                writer->Send(200, "text/plain", "ok");
                              })
                      .ok());
    });
  }

  // Opens a stream and waits until the handler has its writer.
  std::shared_ptr<ResponseWriter> OpenStream(TestClient& client, ResponseHead* head,
                                             size_t nth = 1) {
    EXPECT_TRUE(client.Send(BuildRequest("POST", "/v1/completions", "{}")).ok());
    absl::StatusOr<ResponseHead> got = client.ReadHead();
    EXPECT_TRUE(got.ok()) << got.status();
    if (got.ok()) *head = *got;
    std::vector<std::shared_ptr<ResponseWriter>> writers = streams_.Await(nth);
    EXPECT_EQ(writers.size(), nth);
    return writers.empty() ? nullptr : writers.back();
  }

  StreamRegistry streams_;
  Notification closed_;
};

TEST_F(HttpStreamTest, EventsArriveInOrderAndStreamTerminates) {
  StartStreaming(DefaultOptions());
  TestClient client = Connect();
  ResponseHead head;
  std::shared_ptr<ResponseWriter> writer = OpenStream(client, &head);
  ASSERT_NE(writer, nullptr);
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.Header("Content-Type"), "text/event-stream");
  EXPECT_EQ(head.Header("Cache-Control"), "no-cache");
  EXPECT_EQ(head.Header("X-Stream"), "1");
  EXPECT_TRUE(head.chunked());

  constexpr int kEvents = 200;
  std::thread producer([writer] {
    for (int i = 0; i < kEvents; ++i) writer->SendEvent("{\"i\":" + std::to_string(i) + "}");
    writer->SendEvent("[DONE]");
    writer->EndStream();
  });
  absl::StatusOr<std::string> body = client.ReadBody(head);
  producer.join();
  ASSERT_TRUE(body.ok()) << body.status();
  std::vector<std::string> events = ParseSseEvents(*body);
  ASSERT_EQ(events.size(), kEvents + 1u);
  for (int i = 0; i < kEvents; ++i) EXPECT_EQ(events[i], "{\"i\":" + std::to_string(i) + "}");
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_TRUE(writer->closed());
  EXPECT_FALSE(writer->SendEvent("late"));

  // The finished stream left the connection reusable, and OnClose did not fire.
  absl::StatusOr<Response> next = client.RoundTrip(BuildRequest("GET", "/health"));
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->body, "ok");
  EXPECT_FALSE(closed_.notified());
  std::vector<AccessLogEntry> entries = log_.AwaitEntries(2);
  ASSERT_GE(entries.size(), 1u);
  EXPECT_EQ(entries[0].status, 200);
  EXPECT_EQ(entries[0].body_bytes, body->size());
}

TEST_F(HttpStreamTest, MultiLineEventIsSentAsSeveralDataLines) {
  StartStreaming(DefaultOptions());
  TestClient client = Connect();
  ResponseHead head;
  std::shared_ptr<ResponseWriter> writer = OpenStream(client, &head);
  ASSERT_NE(writer, nullptr);
  writer->SendEvent("line one\nline two");
  writer->EndStream();
  absl::StatusOr<std::string> body = client.ReadBody(head);
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(*body, "data: line one\ndata: line two\n\n");
}

TEST_F(HttpStreamTest, ClientDisconnectMidStreamFiresOnCloseWhileHandlerIsIdle) {
  StartStreaming(DefaultOptions());
  TestClient client = Connect();
  ResponseHead head;
  std::shared_ptr<ResponseWriter> writer = OpenStream(client, &head);
  ASSERT_NE(writer, nullptr);
  ASSERT_TRUE(writer->SendEvent("first"));
  absl::StatusOr<std::string> chunk = client.ReadChunk();
  ASSERT_TRUE(chunk.ok()) << chunk.status();
  EXPECT_EQ(*chunk, "data: first\n\n");

  client.Close();  // nothing is written after this: the server must notice on its own
  ASSERT_TRUE(closed_.WaitFor());
  EXPECT_TRUE(writer->closed());

  // Late calls from the producer are refused and harmless; a late OnClose runs at once.
  EXPECT_FALSE(writer->SendEvent("after close"));
  EXPECT_FALSE(writer->EndStream());
  EXPECT_FALSE(writer->Send(200, "text/plain", "x"));
  Notification late;
  writer->OnClose([&late] { late.Notify(); });
  EXPECT_TRUE(late.notified());
  std::vector<AccessLogEntry> entries = log_.AwaitEntries(1);
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].target, "/v1/completions");
}

TEST_F(HttpStreamTest, OnCloseDoesNotFireForACompletedResponse) {
  StartStreaming(DefaultOptions());
  TestClient client = Connect();
  ResponseHead head;
  std::shared_ptr<ResponseWriter> writer = OpenStream(client, &head);
  ASSERT_NE(writer, nullptr);
  writer->EndStream();
  ASSERT_TRUE(client.ReadBody(head).ok());
  client.Close();
  ASSERT_EQ(log_.AwaitEntries(1).size(), 1u);
  Notification fired;
  writer->OnClose([&fired] { fired.Notify(); });
  EXPECT_FALSE(fired.notified());
  EXPECT_FALSE(closed_.notified());
}

TEST_F(HttpStreamTest, SlowClientIsDroppedOnceItsQueueExceedsTheCap) {
  HttpServerOptions options = DefaultOptions();
  options.max_queued_bytes = 64 << 10;
  StartStreaming(options);
  TestClient client = Connect(/*receive_buffer_bytes=*/4096);
  ResponseHead head;
  std::shared_ptr<ResponseWriter> writer = OpenStream(client, &head);
  ASSERT_NE(writer, nullptr);
  // The client reads nothing more; kernel buffers absorb a few MB, then the queue fills.
  const std::string event(4096, 'x');
  size_t accepted = 0;
  while (writer->SendEvent(event)) {
    ++accepted;
    ASSERT_LT(accepted, 64u << 10) << "256 MB accepted for a client that reads nothing";
  }
  EXPECT_TRUE(writer->closed());
  EXPECT_TRUE(closed_.WaitFor());
}

TEST_F(HttpStreamTest, StopAcceptingLetsInFlightStreamFinish) {
  StartStreaming(DefaultOptions());
  TestClient client = Connect();
  ResponseHead head;
  std::shared_ptr<ResponseWriter> writer = OpenStream(client, &head);
  ASSERT_NE(writer, nullptr);
  TestClient idle = Connect();
  ASSERT_TRUE(idle.RoundTrip(BuildRequest("GET", "/health")).ok());

  ASSERT_TRUE(server_->accepting());
  server_->StopAccepting();
  EXPECT_FALSE(server_->accepting());
  // The idle keep-alive connection is closed, and nobody new gets in.
  EXPECT_TRUE(idle.AwaitClose());
  absl::StatusOr<TestClient> late = TestClient::Connect(server_->port(), 2);
  if (late.ok()) {
    EXPECT_FALSE(late->RoundTrip(BuildRequest("GET", "/health")).ok());
  }

  for (int i = 0; i < 5; ++i) ASSERT_TRUE(writer->SendEvent(std::to_string(i)));
  ASSERT_TRUE(writer->EndStream());
  absl::StatusOr<std::string> body = client.ReadBody(head);
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(ParseSseEvents(*body), (std::vector<std::string>{"0", "1", "2", "3", "4"}));
  EXPECT_TRUE(client.AwaitClose());  // drained: no keep-alive after the last response
  EXPECT_FALSE(closed_.notified());
}

TEST_F(HttpStreamTest, ShutdownClosesOpenStreamsAndLateWritesAreHarmless) {
  StartStreaming(DefaultOptions());
  TestClient client = Connect();
  ResponseHead head;
  std::shared_ptr<ResponseWriter> writer = OpenStream(client, &head);
  ASSERT_NE(writer, nullptr);
  server_->Shutdown(absl::Now() + absl::Milliseconds(50));
  EXPECT_TRUE(closed_.notified());  // fired before Shutdown returned
  EXPECT_TRUE(client.AwaitClose());
  EXPECT_FALSE(writer->SendEvent("after shutdown"));
  EXPECT_FALSE(writer->EndStream());
  EXPECT_EQ(server_->num_connections(), 0u);
  server_.reset();
  EXPECT_FALSE(writer->SendEvent("after the server is gone"));
}

TEST_F(HttpStreamTest, HttpOneZeroStreamIsCloseDelimited) {
  StartStreaming(DefaultOptions());
  TestClient client = Connect();
  ASSERT_TRUE(client.Send("POST /v1/completions HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}").ok());
  absl::StatusOr<ResponseHead> head = client.ReadHead();
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_FALSE(head->chunked());
  EXPECT_EQ(head->Header("Connection"), "close");
  std::vector<std::shared_ptr<ResponseWriter>> writers = streams_.Await(1);
  ASSERT_EQ(writers.size(), 1u);
  writers[0]->SendEvent("a");
  writers[0]->SendEvent("b");
  writers[0]->EndStream();
  absl::StatusOr<std::string> body = client.ReadBody(*head);
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(ParseSseEvents(*body), (std::vector<std::string>{"a", "b"}));
}

}  // namespace
}  // namespace tessera::http::testing
