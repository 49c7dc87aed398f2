// HttpServer: listening socket, accept loop, io threads, drain and shutdown.
#include "server/http/http_server.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/http/connection.h"
#include "server/http/server_context.h"

namespace tessera::http {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

absl::Status HttpServerOptions::Validate() const {
  if (host.empty()) return absl::InvalidArgumentError("http host is empty");
  if (num_threads < 1 || num_threads > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("http num_threads must be in [1, 256], got ", num_threads));
  }
  if (max_body_bytes == 0)
    return absl::InvalidArgumentError("http max_body_bytes must be positive");
  if (max_header_bytes < 1024 || max_header_bytes > (1u << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat("http max_header_bytes must be in [1 KiB, 1 GiB], got ", max_header_bytes));
  }
  if (idle_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("http idle_timeout must be positive");
  }
  if (max_connections == 0)
    return absl::InvalidArgumentError("http max_connections must be positive");
  if (max_queued_bytes == 0)
    return absl::InvalidArgumentError("http max_queued_bytes must be positive");
  return absl::OkStatus();
}

struct HttpServer::Impl {
  explicit Impl(HttpServerOptions options) : context(std::make_shared<ServerContext>()) {
    context->options = std::move(options);
  }

  void Accept() ABSL_EXCLUSIVE_LOCKS_REQUIRED(acceptor_mu);
  void OnAccept(const error_code& ec, tcp::socket socket);

  std::shared_ptr<ServerContext> context;
  std::unique_ptr<asio::io_context> io;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  std::atomic<uint16_t> port{0};
  std::atomic<bool> accepting{false};

  absl::Mutex acceptor_mu;  // the acceptor is used from io threads and StopAccepting()
  std::optional<tcp::acceptor> acceptor ABSL_GUARDED_BY(acceptor_mu);
  std::optional<asio::steady_timer> retry_timer ABSL_GUARDED_BY(acceptor_mu);

  absl::Mutex lifecycle_mu;  // Start / Shutdown
  bool started ABSL_GUARDED_BY(lifecycle_mu) = false;
  bool stopped ABSL_GUARDED_BY(lifecycle_mu) = false;
};

void HttpServer::Impl::Accept() {
  if (!accepting.load()) return;
  acceptor->async_accept(asio::make_strand(*io), [this](const error_code& ec, tcp::socket socket) {
    OnAccept(ec, std::move(socket));
  });
}

void HttpServer::Impl::OnAccept(const error_code& ec, tcp::socket socket) {
  absl::MutexLock lock(&acceptor_mu);
  if (!accepting.load() || ec == asio::error::operation_aborted) return;
  if (ec) {
    // Typically out of file descriptors: back off briefly instead of spinning.
    retry_timer->expires_after(std::chrono::milliseconds(50));
    retry_timer->async_wait([this](const error_code& wait_ec) {
      if (wait_ec) return;
      absl::MutexLock retry_lock(&acceptor_mu);
      Accept();
    });
    return;
  }
  error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);  // SSE events are small and latency-bound
  const bool full = context->registry.size() >= context->options.max_connections;
  StartConnection(std::move(socket), context, full);
  Accept();
}

HttpServer::HttpServer(HttpServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

HttpServer::~HttpServer() { Shutdown(absl::Now()); }

absl::Status HttpServer::Handle(std::string_view method, std::string_view path,
                                HttpHandler handler) {
  absl::MutexLock lock(&impl_->lifecycle_mu);
  if (impl_->started) {
    return absl::FailedPreconditionError("routes must be registered before HttpServer::Start");
  }
  return impl_->context->router.Add(method, path, std::move(handler));
}

absl::Status HttpServer::Start() {
  absl::MutexLock lock(&impl_->lifecycle_mu);
  if (impl_->started) return absl::FailedPreconditionError("HttpServer already started");
  const HttpServerOptions& options = impl_->context->options;
  if (absl::Status status = options.Validate(); !status.ok()) return status;

  {
    // Left over from a failed Start(): they must go before the io context they use.
    absl::MutexLock acceptor_lock(&impl_->acceptor_mu);
    impl_->retry_timer.reset();
    impl_->acceptor.reset();
  }
  impl_->io = std::make_unique<asio::io_context>(options.num_threads);
  error_code ec;
  tcp::resolver resolver(*impl_->io);
  auto endpoints = resolver.resolve(options.host, std::to_string(options.port),
                                    tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve http host '", options.host, "': ", ec.message()));
  }
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  const std::string where = absl::StrCat(options.host, ":", options.port);
  {
    absl::MutexLock acceptor_lock(&impl_->acceptor_mu);
    tcp::acceptor& acceptor = impl_->acceptor.emplace(asio::make_strand(*impl_->io));
    impl_->retry_timer.emplace(acceptor.get_executor());
    if (acceptor.open(endpoint.protocol(), ec); ec) {
      return absl::InternalError(
          absl::StrCat("cannot open socket for ", where, ": ", ec.message()));
    }
    acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (acceptor.bind(endpoint, ec); ec) {
      return absl::UnavailableError(absl::StrCat("cannot bind http ", where, ": ", ec.message()));
    }
    if (acceptor.listen(asio::socket_base::max_listen_connections, ec); ec) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", where, ": ", ec.message()));
    }
    impl_->port = acceptor.local_endpoint().port();
    impl_->accepting = true;
    impl_->Accept();
  }
  impl_->work.emplace(asio::make_work_guard(*impl_->io));
  impl_->threads.reserve(options.num_threads);
  for (int i = 0; i < options.num_threads; ++i) {
    impl_->threads.emplace_back([io = impl_->io.get()] { io->run(); });
  }
  impl_->started = true;
  return absl::OkStatus();
}

uint16_t HttpServer::port() const { return impl_->port.load(); }

bool HttpServer::accepting() const { return impl_->accepting.load(); }

size_t HttpServer::num_connections() const { return impl_->context->registry.size(); }

void HttpServer::StopAccepting() {
  {
    absl::MutexLock lock(&impl_->acceptor_mu);
    if (!impl_->accepting.exchange(false)) return;
    impl_->context->draining = true;
    error_code ignored;
    impl_->acceptor->close(ignored);
    impl_->retry_timer->cancel();
  }
  for (const auto& connection : impl_->context->registry.Snapshot()) connection->Drain();
}

void HttpServer::Shutdown(absl::Time deadline) {
  absl::MutexLock lock(&impl_->lifecycle_mu);
  if (!impl_->started || impl_->stopped) return;
  impl_->stopped = true;
  StopAccepting();
  ConnectionRegistry& registry = impl_->context->registry;
  if (!registry.AwaitEmpty(deadline)) {
    for (const auto& connection : registry.Snapshot()) connection->ForceClose();
    // Closing is quick; the bound only guards against a wedged io thread.
    registry.AwaitEmpty(absl::Now() + absl::Seconds(2));
  }
  {
    // From here on writers held by other threads do nothing.
    absl::MutexLock gate_lock(&impl_->context->gate->mu);
    impl_->context->gate->open = false;
  }
  impl_->work.reset();
  impl_->io->stop();
  for (std::thread& thread : impl_->threads) thread.join();
  impl_->threads.clear();
  {
    absl::MutexLock acceptor_lock(&impl_->acceptor_mu);
    impl_->retry_timer.reset();
    impl_->acceptor.reset();
  }
  // Destroys whatever handlers were still queued (and the connections they held).
  impl_->io.reset();
}

}  // namespace tessera::http
