// Access-log line formatting and the default stderr sink.
#include "server/http/access_log.h"

#include <unistd.h>

#include "absl/strings/str_format.h"

namespace tessera::http {

std::string FormatAccessLogLine(const AccessLogEntry& e) {
  return absl::StrFormat("%s %s %s %d %d %.3f %s", e.remote.empty() ? "-" : e.remote,
                         e.method.empty() ? "-" : e.method, e.target.empty() ? "-" : e.target,
                         e.status, e.body_bytes, e.duration_ms,
                         e.request_id.empty() ? "-" : e.request_id);
}

AccessLogSink StderrAccessLogSink() {
  return [](const AccessLogEntry& entry) {
    // One write(2) per line keeps lines from different io threads whole.
    std::string line = FormatAccessLogLine(entry);
    line.push_back('\n');
    ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
    (void)ignored;
  };
}

}  // namespace tessera::http
