// One access-log entry per request, delivered to a pluggable sink (stderr by default).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace tessera::http {

struct AccessLogEntry {
  std::string method;       // "-" when the request could not be parsed
  std::string target;       // "-" likewise
  int status = 0;           // 499: the client went away before a response was started
  uint64_t body_bytes = 0;  // response body bytes written to the socket
  double duration_ms = 0;   // from the complete request to the last byte written
  std::string request_id;
  std::string remote;
};

// Called on an io thread; must be thread-safe and quick.
using AccessLogSink = std::function<void(const AccessLogEntry&)>;

// `remote method target status bytes duration_ms request_id`, no trailing newline.
std::string FormatAccessLogLine(const AccessLogEntry& entry);

// Writes FormatAccessLogLine() lines to stderr, one write per line.
AccessLogSink StderrAccessLogSink();

}  // namespace tessera::http
