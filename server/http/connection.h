// Starts serving one accepted TCP connection (the Beast-based HTTP/1.1 state machine lives
// in connection.cc).
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <memory>

#include "server/http/server_context.h"

namespace tessera::http {

// Takes over `socket` (whose executor must be a strand) and registers the connection in
// context->registry. With `reject`, answers 503 and closes (the server is full).
void StartConnection(boost::asio::ip::tcp::socket socket, std::shared_ptr<ServerContext> context,
                     bool reject);

}  // namespace tessera::http
