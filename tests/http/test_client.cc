// Blocking test client: socket plumbing, response head parsing, chunked decoding.
#include "tests/http/test_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace tessera::http::testing {

std::string ResponseHead::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (absl::EqualsIgnoreCase(key, absl::string_view(name.data(), name.size()))) return value;
  }
  return "";
}

bool ResponseHead::chunked() const {
  return absl::EqualsIgnoreCase(Header("Transfer-Encoding"), "chunked");
}

TestClient::~TestClient() { Close(); }

TestClient::TestClient(TestClient&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), buffer_(std::move(other.buffer_)) {}

TestClient& TestClient::operator=(TestClient&& other) noexcept {
  if (this != &other) {
    Close();
    fd_ = std::exchange(other.fd_, -1);
    buffer_ = std::move(other.buffer_);
  }
  return *this;
}

absl::StatusOr<TestClient> TestClient::Connect(uint16_t port, int timeout_s,
                                               int receive_buffer_bytes) {
  TestClient client;
  client.fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  if (client.fd_ < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  if (receive_buffer_bytes > 0) {
    ::setsockopt(client.fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer_bytes,
                 sizeof(receive_buffer_bytes));
  }
  timeval tv{timeout_s, 0};
  ::setsockopt(client.fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(client.fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(client.fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::UnavailableError(absl::StrCat("connect: ", std::strerror(errno)));
  }
  return client;
}

absl::Status TestClient::Send(std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::UnavailableError(absl::StrCat("send: ", std::strerror(errno)));
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status TestClient::Fill() {
  char chunk[16384];
  while (true) {
    ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
    if (n > 0) {
      buffer_.append(chunk, static_cast<size_t>(n));
      return absl::OkStatus();
    }
    if (n == 0) return absl::OutOfRangeError("connection closed by server");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return absl::DeadlineExceededError("read timed out");
    return absl::UnavailableError(absl::StrCat("recv: ", std::strerror(errno)));
  }
}

absl::StatusOr<std::string> TestClient::ReadLine() {
  size_t end;
  while ((end = buffer_.find("\r\n")) == std::string::npos) {
    if (absl::Status status = Fill(); !status.ok()) return status;
  }
  std::string line = buffer_.substr(0, end);
  buffer_.erase(0, end + 2);
  return line;
}

absl::StatusOr<std::string> TestClient::ReadExactly(size_t n) {
  while (buffer_.size() < n) {
    if (absl::Status status = Fill(); !status.ok()) return status;
  }
  std::string out = buffer_.substr(0, n);
  buffer_.erase(0, n);
  return out;
}

absl::StatusOr<ResponseHead> TestClient::ReadHead() {
  ResponseHead head;
  absl::StatusOr<std::string> status_line = ReadLine();
  if (!status_line.ok()) return status_line.status();
  std::vector<std::string> parts = absl::StrSplit(*status_line, absl::MaxSplits(' ', 2));
  if (parts.size() < 2 || !absl::StartsWith(parts[0], "HTTP/1.") ||
      !absl::SimpleAtoi(parts[1], &head.status)) {
    return absl::DataLossError(absl::StrCat("bad status line: ", *status_line));
  }
  while (true) {
    absl::StatusOr<std::string> line = ReadLine();
    if (!line.ok()) return line.status();
    if (line->empty()) return head;
    size_t colon = line->find(':');
    if (colon == std::string::npos) return absl::DataLossError(absl::StrCat("bad header: ", *line));
    head.headers.emplace_back(line->substr(0, colon),
                              std::string(absl::StripAsciiWhitespace(line->substr(colon + 1))));
  }
}

absl::StatusOr<std::string> TestClient::ReadChunk() {
  absl::StatusOr<std::string> size_line = ReadLine();
  if (!size_line.ok()) return size_line.status();
  size_t size = 0;
  if (!absl::SimpleHexAtoi(*size_line, &size)) {
    return absl::DataLossError(absl::StrCat("bad chunk size: ", *size_line));
  }
  if (size == 0) {
    // Trailer fields (none expected) end with an empty line.
    while (true) {
      absl::StatusOr<std::string> line = ReadLine();
      if (!line.ok()) return line.status();
      if (line->empty()) return std::string();
    }
  }
  absl::StatusOr<std::string> data = ReadExactly(size + 2);
  if (!data.ok()) return data.status();
  if (data->substr(size) != "\r\n") return absl::DataLossError("chunk not followed by CRLF");
  data->resize(size);
  return data;
}

absl::StatusOr<std::string> TestClient::ReadBody(const ResponseHead& head) {
  if (head.chunked()) {
    std::string body;
    while (true) {
      absl::StatusOr<std::string> chunk = ReadChunk();
      if (!chunk.ok()) return chunk.status();
      if (chunk->empty()) return body;
      body += *chunk;
    }
  }
  std::string length = head.Header("Content-Length");
  if (!length.empty()) {
    size_t n = 0;
    if (!absl::SimpleAtoi(length, &n)) return absl::DataLossError("bad Content-Length");
    return ReadExactly(n);
  }
  while (true) {
    absl::Status status = Fill();
    if (absl::IsOutOfRange(status)) return std::exchange(buffer_, std::string());
    if (!status.ok()) return status;
  }
}

absl::StatusOr<Response> TestClient::ReadResponse() {
  Response response;
  absl::StatusOr<ResponseHead> head = ReadHead();
  if (!head.ok()) return head.status();
  response.head = std::move(*head);
  absl::StatusOr<std::string> body = ReadBody(response.head);
  if (!body.ok()) return body.status();
  response.body = std::move(*body);
  return response;
}

absl::StatusOr<Response> TestClient::RoundTrip(std::string_view request) {
  if (absl::Status status = Send(request); !status.ok()) return status;
  return ReadResponse();
}

bool TestClient::AwaitClose() {
  buffer_.clear();
  while (true) {
    absl::Status status = Fill();
    if (status.ok()) continue;
    return !absl::IsDeadlineExceeded(status);
  }
}

void TestClient::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

std::string BuildRequest(std::string_view method, std::string_view path, std::string_view body,
                         const std::vector<std::pair<std::string, std::string>>& headers) {
  std::string out;
  out.append(method).append(" ").append(path).append(" HTTP/1.1\r\nHost: localhost\r\n");
  for (const auto& [name, value] : headers) out += name + ": " + value + "\r\n";
  if (!body.empty() || method == "POST")
    out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  out += "\r\n";
  out.append(body);
  return out;
}

std::vector<std::string> ParseSseEvents(std::string_view body) {
  std::vector<std::string> events;
  std::string current;
  bool has_data = false;
  for (absl::string_view line : absl::StrSplit(absl::string_view(body.data(), body.size()), '\n')) {
    if (line.empty()) {
      if (has_data) events.push_back(current);
      current.clear();
      has_data = false;
    } else if (absl::StartsWith(line, "data: ")) {
      if (has_data) current.push_back('\n');
      current.append(line.substr(6).data(), line.size() - 6);
      has_data = true;
    }
  }
  return events;
}

}  // namespace tessera::http::testing
