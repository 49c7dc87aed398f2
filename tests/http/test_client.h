// A deliberately simple blocking HTTP/1.1 client over POSIX sockets, written independently
// of the server's code so the tests check real bytes on the wire.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::http::testing {

struct ResponseHead {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  // First value of a header (case-insensitive), "" when absent.
  std::string Header(std::string_view name) const;
  bool chunked() const;
};

struct Response {
  ResponseHead head;
  std::string body;
  int status() const { return head.status; }
  std::string Header(std::string_view name) const { return head.Header(name); }
};

class TestClient {
 public:
  TestClient() = default;
  ~TestClient();
  TestClient(TestClient&& other) noexcept;
  TestClient& operator=(TestClient&& other) noexcept;

  // Connects to 127.0.0.1:port; every later read gives up after `timeout_s` seconds so a
  // broken server fails the test instead of hanging it.
  static absl::StatusOr<TestClient> Connect(uint16_t port, int timeout_s = 10,
                                            int receive_buffer_bytes = 0);

  absl::Status Send(std::string_view bytes);
  absl::StatusOr<ResponseHead> ReadHead();
  // One chunk of a chunked body; "" for the last chunk (its trailer is consumed).
  absl::StatusOr<std::string> ReadChunk();
  // The body that follows `head`: Content-Length, chunked, or up to the connection's end.
  absl::StatusOr<std::string> ReadBody(const ResponseHead& head);
  absl::StatusOr<Response> ReadResponse();
  // Sends `request` and reads the response.
  absl::StatusOr<Response> RoundTrip(std::string_view request);
  // True once the server closed the connection (end of stream or reset); false on timeout.
  bool AwaitClose();
  void Close();
  int fd() const { return fd_; }

 private:
  absl::Status Fill();  // reads more bytes into buffer_
  absl::StatusOr<std::string> ReadLine();
  absl::StatusOr<std::string> ReadExactly(size_t n);

  int fd_ = -1;
  std::string buffer_;
};

// "METHOD path HTTP/1.1" with Host, Content-Length (when there is a body) and `headers`.
std::string BuildRequest(std::string_view method, std::string_view path, std::string_view body = {},
                         const std::vector<std::pair<std::string, std::string>>& headers = {});

// The data of each SSE event in `body` (data lines of one event joined with '\n').
std::vector<std::string> ParseSseEvents(std::string_view body);

}  // namespace tessera::http::testing
