// ResponseWriter: how a handler answers one request, whole or as a Server-Sent-Events
// stream, from any thread; plus the OpenAI-shaped JSON error helper.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "server/http/http_types.h"

namespace tessera::http {

// One response. Every method is thread-safe and non-blocking: output is queued onto the
// connection, so the engine thread may call it directly. A writer is used for exactly one
// response: either Send(), or StartStream() + SendEvent()* + EndStream(). Calls that do not
// fit that order, or come after the connection closed, return false and do nothing.
class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;

  // A complete response with Content-Length.
  virtual bool Send(int status, std::string_view content_type, std::string body,
                    const HeaderList& extra_headers = {}) = 0;

  // Starts an SSE response (Content-Type text/event-stream unless `headers` sets one).
  virtual bool StartStream(int status = 200, const HeaderList& headers = {}) = 0;
  // Writes one event: every line of `data` becomes a "data: " line, then a blank line.
  virtual bool SendEvent(std::string_view data) = 0;
  // Terminates the stream; the connection is then reused (keep-alive) or closed.
  virtual bool EndStream() = 0;

  // True once the writer accepts no more output: the response is complete, or the
  // connection went away (client disconnect, slow-client overflow, server shutdown).
  virtual bool closed() const = 0;

  // `callback` runs once if the connection goes away before the response is complete,
  // so the producer can cancel its work. It runs immediately (on the caller's thread) if
  // that already happened, otherwise on an io thread: keep it short and non-blocking.
  // A later call replaces a callback that has not run yet.
  virtual void OnClose(std::function<void()> callback) = 0;

  virtual const std::string& request_id() const = 0;
};

// The body OpenAI clients expect for errors: {"error":{"message","type","code"}}.
// `code` is the HTTP status unless given.
std::string JsonErrorBody(int status, std::string_view message, std::string_view type,
                          std::string_view code = {});

// Sends JsonErrorBody() as application/json with `status`.
bool WriteJsonError(ResponseWriter& writer, int status, std::string_view message,
                    std::string_view type);
bool WriteJsonError(const std::shared_ptr<ResponseWriter>& writer, int status,
                    std::string_view message, std::string_view type);

}  // namespace tessera::http
