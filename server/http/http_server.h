// HttpServer: the asynchronous HTTP/1.1 + SSE transport (Boost.Beast underneath, kept out of
// this header). A few io threads serve every connection; handlers never get a thread each.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/http/access_log.h"
#include "server/http/http_types.h"
#include "server/http/response_writer.h"

namespace tessera::http {

// Handlers run on an io thread: they must not block. Long work is handed elsewhere with
// the writer, which may be answered later from any thread.
using HttpHandler =
    std::function<void(const HttpRequest& request, std::shared_ptr<ResponseWriter> writer)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0 picks a free port; see HttpServer::port()
  int num_threads = 2;
  size_t max_body_bytes = 1 << 20;
  size_t max_header_bytes = 16 << 10;
  // Longest wait for a complete request on an idle or keep-alive connection, and for
  // one write to make progress to a stalled client.
  absl::Duration idle_timeout = absl::Seconds(60);
  size_t max_connections = 10000;
  // Output a slow client may leave unread on one connection before it is dropped.
  size_t max_queued_bytes = 4 << 20;
  // Receives one entry per request; the default writes a line to stderr.
  AccessLogSink access_log = StderrAccessLogSink();

  absl::Status Validate() const;
};

class HttpServer {
 public:
  explicit HttpServer(HttpServerOptions options);
  ~HttpServer();  // Shutdown(absl::Now()) if still running
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Routes `method` + exact `path`; a path ending in "/*" matches every path under it
  // (the longest such prefix wins, exact paths first). GET routes also answer HEAD.
  // Only before Start().
  absl::Status Handle(std::string_view method, std::string_view path, HttpHandler handler);

  // Validates options, binds, listens and starts the io threads.
  absl::Status Start();
  uint16_t port() const;

  // New connections are refused; in-flight responses continue, then their connections
  // close; idle keep-alive connections close now.
  void StopAccepting();
  bool accepting() const;

  // StopAccepting(), waits for in-flight responses until `deadline`, then closes every
  // connection (their writers report OnClose) and joins the io threads. Idempotent; not
  // from a handler (it joins the thread running it).
  void Shutdown(absl::Time deadline);

  // Open connections right now (for tests and metrics).
  size_t num_connections() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::http
