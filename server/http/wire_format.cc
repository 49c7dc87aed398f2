// Response head, chunk and SSE framing.
#include "server/http/wire_format.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/http/string_util.h"

namespace tessera::http {
namespace {

void AppendClean(std::string& out, std::string_view text) {
  for (char c : text) {
    if (c != '\r' && c != '\n' && c != '\0') out.push_back(c);
  }
}

}  // namespace

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 413:
      return "Payload Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Entity";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 499:
      return "Client Closed Request";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Unknown";
  }
}

std::string FormatResponseHead(int status, const HeaderList& headers) {
  std::string out = absl::StrFormat("HTTP/1.1 %03d %s\r\n", status, ReasonPhrase(status));
  for (const auto& [name, value] : headers) {
    AppendClean(out, name);
    out.append(": ");
    AppendClean(out, value);
    out.append("\r\n");
  }
  out.append("\r\n");
  return out;
}

std::string FormatSseEvent(std::string_view data) {
  std::string out;
  out.reserve(data.size() + 8);
  size_t start = 0;
  while (true) {
    size_t end = data.find_first_of("\r\n", start);
    out.append("data: ");
    out.append(data.substr(start, end == std::string_view::npos ? end : end - start));
    out.push_back('\n');
    if (end == std::string_view::npos) break;
    start = end + 1;
    if (data[end] == '\r' && start < data.size() && data[start] == '\n') ++start;
    if (start == data.size()) break;  // a trailing line break ends the last line
  }
  out.push_back('\n');
  return out;
}

std::string FormatChunk(std::string_view payload) {
  if (payload.empty()) return {};
  return absl::StrCat(absl::Hex(payload.size()), "\r\n", AbslView(payload), "\r\n");
}

bool IsTransportHeader(std::string_view name) {
  return absl::EqualsIgnoreCase(AbslView(name), "Content-Length") ||
         absl::EqualsIgnoreCase(AbslView(name), "Transfer-Encoding") ||
         absl::EqualsIgnoreCase(AbslView(name), "Connection") ||
         absl::EqualsIgnoreCase(AbslView(name), "Keep-Alive") ||
         absl::EqualsIgnoreCase(AbslView(name), "X-Request-Id");
}

}  // namespace tessera::http
