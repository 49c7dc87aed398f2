// Request/response behaviour of HttpServer over real sockets: routing, errors, request ids,
// limits (each followed by a healthy request on another connection), keep-alive, access log.
#include "server/http/http_server.h"

#include <atomic>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "tests/http/server_fixture.h"
#include "tests/http/test_client.h"

namespace tessera::http::testing {
namespace {

using nlohmann::json;

void EchoRoutes(HttpServer& server) {
  ASSERT_TRUE(
      server
          .Handle("POST", "/echo",
                  [](const HttpRequest& request, std::shared_ptr<ResponseWriter> writer) {
                    json reply = {{"body", request.body},
                                  {"query", request.query},
                                  {"method", request.method},
                                  {"target", request.target},
                                  {"custom", std::string(request.headers.Get("x-CUSTOM"))}};
                    writer->Send(200, "application/json", reply.dump(), {{"X-Handler", "echo"}});
                  })
          .ok());
  ASSERT_TRUE(server
                  .Handle("GET", "/health",
                          [](const HttpRequest&, std::shared_ptr<ResponseWriter> writer) {
                            writer->Send(200, "text/plain", "ok");
                          })
                  .ok());
}

class HttpServerTest : public ServerTest {
 protected:
  void SetUp() override { StartServer(DefaultOptions(), EchoRoutes); }

  // A fresh connection still gets served normally.
  void ExpectHealthyOnNewConnection() {
    TestClient client = Connect();
    absl::StatusOr<Response> response = client.RoundTrip(BuildRequest("GET", "/health"));
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->status(), 200);
    EXPECT_EQ(response->body, "ok");
  }

  static json ParseError(const Response& response) {
    json body = json::parse(response.body, nullptr, false);
    EXPECT_FALSE(body.is_discarded()) << response.body;
    EXPECT_TRUE(body.contains("error")) << response.body;
    return body.is_discarded() ? json::object() : body["error"];
  }
};

TEST_F(HttpServerTest, ServesRequestsAndKeepsTheConnectionAlive) {
  TestClient client = Connect();
  for (int i = 0; i < 3; ++i) {
    std::string body = "payload-" + std::to_string(i);
    absl::StatusOr<Response> response = client.RoundTrip(
        BuildRequest("POST", "/echo?n=" + std::to_string(i), body, {{"X-Custom", "v"}}));
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->status(), 200);
    EXPECT_EQ(response->Header("Content-Type"), "application/json");
    EXPECT_EQ(response->Header("X-Handler"), "echo");
    EXPECT_EQ(response->Header("Connection"), "keep-alive");
    json reply = json::parse(response->body);
    EXPECT_EQ(reply["body"], body);
    EXPECT_EQ(reply["query"], "n=" + std::to_string(i));
    EXPECT_EQ(reply["target"], "/echo");
    EXPECT_EQ(reply["custom"], "v");
  }
}

TEST_F(HttpServerTest, AnswersPipelinedRequestsInOrder) {
  TestClient client = Connect();
  ASSERT_TRUE(
      client.Send(BuildRequest("POST", "/echo", "first") + BuildRequest("POST", "/echo", "second"))
          .ok());
  for (const char* expected : {"first", "second"}) {
    absl::StatusOr<Response> response = client.ReadResponse();
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(json::parse(response->body)["body"], expected);
  }
}

TEST_F(HttpServerTest, UnknownPathIs404WithOpenAiErrorBody) {
  TestClient client = Connect();
  absl::StatusOr<Response> response = client.RoundTrip(BuildRequest("GET", "/v1/nothing"));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status(), 404);
  EXPECT_EQ(response->Header("Content-Type"), "application/json");
  json error = ParseError(*response);
  EXPECT_TRUE(error["message"].is_string());
  EXPECT_EQ(error["type"], "invalid_request_error");
  EXPECT_EQ(error["code"], 404);
}

TEST_F(HttpServerTest, WrongMethodIs405WithAllowHeader) {
  TestClient client = Connect();
  absl::StatusOr<Response> response = client.RoundTrip(BuildRequest("GET", "/echo"));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status(), 405);
  EXPECT_EQ(response->Header("Allow"), "POST");
  EXPECT_EQ(ParseError(*response)["code"], 405);
}

TEST_F(HttpServerTest, HeadOnGetRouteSendsHeadersWithoutBody) {
  TestClient client = Connect();
  ASSERT_TRUE(client.Send(BuildRequest("HEAD", "/health")).ok());
  absl::StatusOr<ResponseHead> head = client.ReadHead();
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->Header("Content-Length"), "2");
  // The connection stays usable: the next response starts right where the head ended.
  absl::StatusOr<Response> next = client.RoundTrip(BuildRequest("GET", "/health"));
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->body, "ok");
}

TEST_F(HttpServerTest, EchoesSanitizedRequestIdAndGeneratesOneOtherwise) {
  TestClient client = Connect();
  absl::StatusOr<Response> given =
      client.RoundTrip(BuildRequest("GET", "/health", {}, {{"X-Request-Id", "req-42"}}));
  ASSERT_TRUE(given.ok()) << given.status();
  EXPECT_EQ(given->Header("X-Request-Id"), "req-42");

  absl::StatusOr<Response> dirty =
      client.RoundTrip(BuildRequest("GET", "/health", {}, {{"X-Request-Id", "a b<c>\"d"}}));
  ASSERT_TRUE(dirty.ok()) << dirty.status();
  EXPECT_EQ(dirty->Header("X-Request-Id"), "abcd");

  absl::StatusOr<Response> first = client.RoundTrip(BuildRequest("GET", "/health"));
  absl::StatusOr<Response> second = client.RoundTrip(BuildRequest("GET", "/v1/missing"));
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(first->Header("X-Request-Id").size(), 32u);
  EXPECT_EQ(second->Header("X-Request-Id").size(), 32u);
  EXPECT_NE(first->Header("X-Request-Id"), second->Header("X-Request-Id"));
}

TEST_F(HttpServerTest, AccessLogHasOneEntryPerRequest) {
  TestClient client = Connect();
  ASSERT_TRUE(
      client.RoundTrip(BuildRequest("POST", "/echo", "abc", {{"X-Request-Id", "log-1"}})).ok());
  ASSERT_TRUE(
      client.RoundTrip(BuildRequest("GET", "/missing", {}, {{"X-Request-Id", "log-2"}})).ok());
  std::vector<AccessLogEntry> entries = log_.AwaitEntries(2);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].method, "POST");
  EXPECT_EQ(entries[0].target, "/echo");
  EXPECT_EQ(entries[0].status, 200);
  EXPECT_GT(entries[0].body_bytes, 0u);
  EXPECT_GE(entries[0].duration_ms, 0.0);
  EXPECT_EQ(entries[0].request_id, "log-1");
  EXPECT_EQ(entries[1].status, 404);
  EXPECT_EQ(entries[1].request_id, "log-2");
  EXPECT_NE(entries[1].remote.find("127.0.0.1:"), std::string::npos);
  std::string line = FormatAccessLogLine(entries[0]);
  EXPECT_NE(line.find("POST /echo 200"), std::string::npos) << line;
}

TEST_F(HttpServerTest, HugeDeclaredBodyGets413BeforeItIsSent) {
  TestClient client = Connect();
  // 10 GB announced, 5 bytes sent: the answer must come without the server waiting for more.
  ASSERT_TRUE(client
                  .Send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n"
                        "hello")
                  .ok());
  absl::StatusOr<Response> response = client.ReadResponse();
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status(), 413);
  EXPECT_EQ(response->Header("Connection"), "close");
  EXPECT_EQ(ParseError(*response)["code"], 413);
  EXPECT_TRUE(client.AwaitClose());
  ExpectHealthyOnNewConnection();
}

TEST_F(HttpServerTest, ChunkedBodyOverTheLimitGets413) {
  TestClient client = Connect();
  ASSERT_TRUE(
      client.Send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").ok());
  std::string chunk = "100000\r\n" + std::string(0x100000, 'a') + "\r\n";
  // The server may answer and close mid-upload; later sends may then fail, which is fine.
  for (int i = 0; i < 2; ++i) {
    if (!client.Send(chunk).ok()) break;
  }
  absl::StatusOr<Response> response = client.ReadResponse();
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status(), 413);
  ExpectHealthyOnNewConnection();
}

TEST_F(HttpServerTest, OversizedHeaderGets431) {
  TestClient client = Connect();
  std::string big(20 << 10, 'h');
  absl::StatusOr<Response> response =
      client.RoundTrip(BuildRequest("GET", "/health", {}, {{"X-Big", big}}));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status(), 431);
  EXPECT_EQ(ParseError(*response)["code"], 431);
  ExpectHealthyOnNewConnection();
}

TEST_F(HttpServerTest, GarbageGets400AndOtherConnectionsCarryOn) {
  TestClient bystander = Connect();
  TestClient client = Connect();
  absl::StatusOr<Response> response = client.RoundTrip("\x16\x03\x01 this is not http\r\n\r\n");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status(), 400);
  EXPECT_EQ(ParseError(*response)["type"], "invalid_request_error");
  EXPECT_TRUE(client.AwaitClose());
  // A connection opened before the garbage arrived is unaffected, and so is a new one.
  absl::StatusOr<Response> ok = bystander.RoundTrip(BuildRequest("GET", "/health"));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->status(), 200);
  ExpectHealthyOnNewConnection();
}

TEST_F(HttpServerTest, ExpectContinueGetsInterimResponseBeforeBody) {
  TestClient client = Connect();
  ASSERT_TRUE(client
                  .Send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                        "Expect: 100-continue\r\n\r\n")
                  .ok());
  absl::StatusOr<ResponseHead> interim = client.ReadHead();
  ASSERT_TRUE(interim.ok()) << interim.status();
  EXPECT_EQ(interim->status, 100);
  ASSERT_TRUE(client.Send("body").ok());
  absl::StatusOr<Response> response = client.ReadResponse();
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(json::parse(response->body)["body"], "body");
}

TEST_F(HttpServerTest, HttpOneZeroRequestIsAnsweredAndClosed) {
  TestClient client = Connect();
  absl::StatusOr<Response> response = client.RoundTrip("GET /health HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->body, "ok");
  EXPECT_EQ(response->Header("Connection"), "close");
  EXPECT_TRUE(client.AwaitClose());
}

class HandlerFailureTest : public ServerTest {};

TEST_F(HandlerFailureTest, DroppedWriterAndThrowingHandlerBecome500) {
  StartServer(DefaultOptions(), [](HttpServer& server) {
    ASSERT_TRUE(
        server.Handle("GET", "/forgets", [](const HttpRequest&, std::shared_ptr<ResponseWriter>) {})
            .ok());
    ASSERT_TRUE(server
                    .Handle("GET", "/throws",
                            [](const HttpRequest&, std::shared_ptr<ResponseWriter>) {
                              throw std::runtime_error("boom");
                            })
                    .ok());
  });
  TestClient client = Connect();
  for (const char* path : {"/forgets", "/throws"}) {
    absl::StatusOr<Response> response = client.RoundTrip(BuildRequest("GET", path));
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->status(), 500) << path;
    EXPECT_EQ(json::parse(response->body)["error"]["type"], "server_error");
  }
}

class LimitsTest : public ServerTest {};

TEST_F(LimitsTest, IdleConnectionIsClosedAfterIdleTimeout) {
  HttpServerOptions options = DefaultOptions();
  options.idle_timeout = absl::Milliseconds(100);
  StartServer(options, EchoRoutes);
  TestClient client = Connect();
  ASSERT_TRUE(client.Send("GET /health HTTP/1.1\r\n").ok());  // and never finishes the header
  EXPECT_TRUE(client.AwaitClose());
}

TEST_F(LimitsTest, ConnectionsBeyondTheLimitGet503) {
  HttpServerOptions options = DefaultOptions();
  options.max_connections = 2;
  StartServer(options, EchoRoutes);
  TestClient first = Connect();
  TestClient second = Connect();
  // Both are registered once they answered a request.
  ASSERT_TRUE(first.RoundTrip(BuildRequest("GET", "/health")).ok());
  ASSERT_TRUE(second.RoundTrip(BuildRequest("GET", "/health")).ok());
  TestClient third = Connect();
  absl::StatusOr<Response> rejected = third.ReadResponse();
  ASSERT_TRUE(rejected.ok()) << rejected.status();
  EXPECT_EQ(rejected->status(), 503);
  EXPECT_TRUE(third.AwaitClose());
  third.Close();
  first.Close();
  // Once the server has noticed both closes, a slot is free again.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (server_->num_connections() > 1 && absl::Now() < deadline) std::this_thread::yield();
  ASSERT_EQ(server_->num_connections(), 1u);
  TestClient again = Connect();
  absl::StatusOr<Response> response = again.RoundTrip(BuildRequest("GET", "/health"));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status(), 200);
}

TEST(HttpServerLifecycleTest, StartFailsClearlyWhenPortIsTaken) {
  HttpServerOptions options;
  options.access_log = nullptr;
  HttpServer first(options);
  ASSERT_TRUE(first.Start().ok());
  options.port = first.port();
  HttpServer second(options);
  absl::Status status = second.Start();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_NE(status.message().find(std::to_string(first.port())), std::string::npos) << status;
}

TEST(HttpServerLifecycleTest, RejectsBadRoutesAndLateRegistration) {
  HttpServer server(HttpServerOptions{});
  auto noop = [](const HttpRequest&, std::shared_ptr<ResponseWriter>) {};
  EXPECT_TRUE(server.Handle("GET", "/a", noop).ok());
  EXPECT_EQ(server.Handle("GET", "/a", noop).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(server.Handle("get", "/b", noop).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(server.Handle("GET", "b", noop).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(server.Start().ok());
  EXPECT_EQ(server.Handle("GET", "/c", noop).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(server.Start().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(HttpServerOptionsTest, ValidateRejectsNonsense) {
  EXPECT_TRUE(HttpServerOptions{}.Validate().ok());
  HttpServerOptions options;
  options.num_threads = 0;
  EXPECT_FALSE(options.Validate().ok());
  options = {};
  options.max_body_bytes = 0;
  EXPECT_FALSE(options.Validate().ok());
  options = {};
  options.max_header_bytes = 10;
  EXPECT_FALSE(options.Validate().ok());
  options = {};
  options.idle_timeout = absl::ZeroDuration();
  EXPECT_FALSE(options.Validate().ok());
  options = {};
  options.host = "";
  EXPECT_FALSE(options.Validate().ok());
  HttpServer server(options);
  EXPECT_EQ(server.Start().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::http::testing
