// Bytes on the wire for responses: status line and header block, chunked framing, and
// Server-Sent-Events framing. Pure functions, so they are tested without sockets.
#pragma once

#include <string>
#include <string_view>

#include "server/http/http_types.h"

namespace tessera::http {

inline constexpr std::string_view kLastChunk = "0\r\n\r\n";

// "Not Found" for 404; "Unknown" for codes without a registered phrase.
std::string_view ReasonPhrase(int status);

// "HTTP/1.1 <status> <reason>\r\n" + each header + "\r\n". CR, LF and NUL are dropped from
// names and values so handler-supplied headers cannot split the response.
std::string FormatResponseHead(int status, const HeaderList& headers);

// One SSE event: each line of `data` (split at CRLF, LF or CR) as "data: <line>\n", then
// a blank line. Empty data gives "data: \n\n".
std::string FormatSseEvent(std::string_view data);

// One chunk of chunked transfer coding; empty payload gives an empty string (an empty
// chunk would end the body).
std::string FormatChunk(std::string_view payload);

// True for headers the transport owns (framing and connection management); handler
// values for them are ignored.
bool IsTransportHeader(std::string_view name);

}  // namespace tessera::http
