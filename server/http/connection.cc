// The per-connection HTTP/1.1 state machine. One read loop (kept pending while a handler
// works, so a client leaving mid-stream is noticed at once), one write queue and one timer,
// all on the connection's strand.
#include "server/http/connection.h"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <cstring>
#include <deque>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/http/request_id.h"
#include "server/http/string_util.h"
#include "server/http/wire_format.h"

namespace tessera::http {
namespace {

std::string_view View(boost::beast::string_view text) { return {text.data(), text.size()}; }

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

constexpr size_t kReadChunk = 8 << 10;
// Request bytes a client may send ahead (pipelining) while a response is in progress; past
// this the connection stops reading until the response ends.
constexpr size_t kMaxReadAhead = 64 << 10;
// After a final "Connection: close" response, unread request bytes are drained for a
// while so the client sees the response rather than a reset.
constexpr auto kLingerTime = std::chrono::seconds(2);
constexpr size_t kMaxLingerBytes = 1 << 20;
constexpr size_t kMaxWriteBatch = 64;

struct OutChunk {
  std::string data;
  size_t payload_bytes = 0;
  bool ends_response = false;
  std::shared_ptr<Exchange> exchange;  // set when `data` counts against its queue cap
};

class Connection final : public ConnectionControl,
                         public ResponseSink,
                         public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, std::shared_ptr<ServerContext> context)
      : socket_(std::move(socket)),
        timer_(socket_.get_executor()),
        context_(std::move(context)),
        options_(context_->options),
        read_chunk_(new char[kReadChunk]) {}

  ~Connection() override { context_->registry.Remove(id_); }

  void set_id(uint64_t id) { id_ = id; }
  tcp::socket::executor_type executor() { return socket_.get_executor(); }
  void Start(bool reject);

  void Drain() override;
  void ForceClose() override;

  void BeginResponse(std::shared_ptr<Exchange> exchange, int status, HeaderList headers,
                     std::string body, bool streaming) override;
  void AppendBody(std::shared_ptr<Exchange> exchange, std::string framed,
                  size_t payload_bytes) override;
  void EndResponse(std::shared_ptr<Exchange> exchange) override;
  void Abort(std::shared_ptr<Exchange> exchange) override;

 private:
  enum class State { kReading, kResponding, kLingering, kClosed };

  template <typename Fn>
  void OnStrand(Fn fn) {
    asio::post(socket_.get_executor(),
               [self = shared_from_this(), fn = std::move(fn)]() mutable { fn(*self); });
  }

  void NewParser();
  void Read();
  void OnRead(const error_code& ec, size_t bytes);
  void ParseBuffered();
  void OnHeader();
  void Dispatch();
  void RespondToParseError(const error_code& ec);
  void RespondError(int status, std::string_view message, std::string_view type);
  void Enqueue(OutChunk chunk);
  void Write();
  void OnWrite(const error_code& ec);
  void FinishResponse();
  void StartLinger();
  void ArmTimer(Clock::duration after) { timer_.expires_after(after); }
  void DisarmTimer() { timer_.expires_at(Clock::time_point::max()); }
  void WaitTimer();
  void Close();
  void LogRequest(int status);
  Clock::duration idle_timeout() const { return absl::ToChronoNanoseconds(options_.idle_timeout); }

  tcp::socket socket_;
  asio::steady_timer timer_;
  std::shared_ptr<ServerContext> context_;
  const HttpServerOptions& options_;
  uint64_t id_ = 0;
  std::string remote_;
  State state_ = State::kReading;

  // Reading: the socket fills read_chunk_; bytes move to buffer_ for the parser, so the
  // parser's buffer is never touched by a read in flight.
  std::unique_ptr<char[]> read_chunk_;
  boost::beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  bool reading_ = false;
  bool header_seen_ = false;
  size_t lingered_bytes_ = 0;

  // Writing.
  std::deque<OutChunk> out_;
  std::vector<asio::const_buffer> write_buffers_;
  size_t write_count_ = 0;
  bool writing_ = false;

  // The response in progress.
  std::shared_ptr<Exchange> exchange_;
  bool keep_alive_ = false;
  bool chunked_ok_ = true;
  bool head_request_ = false;
  std::string method_, target_, request_id_;
  int status_ = 0;
  uint64_t body_bytes_ = 0;
  Clock::time_point started_;
  bool logged_ = true;
};

void Connection::Start(bool reject) {
  error_code ec;
  tcp::endpoint peer = socket_.remote_endpoint(ec);
  if (!ec) remote_ = absl::StrCat(peer.address().to_string(), ":", peer.port());
  DisarmTimer();
  WaitTimer();
  NewParser();
  if (reject) {
    RespondError(503, "the server is at its connection limit", "server_error");
  } else {
    ArmTimer(idle_timeout());
  }
  Read();
}

void Connection::NewParser() {
  parser_.emplace();
  parser_->header_limit(static_cast<std::uint32_t>(options_.max_header_bytes));
  parser_->body_limit(options_.max_body_bytes);
  parser_->eager(true);
  header_seen_ = false;
}

void Connection::Read() {
  if (reading_ || state_ == State::kClosed) return;
  if (state_ == State::kResponding && buffer_.size() >= kMaxReadAhead) return;
  reading_ = true;
  socket_.async_read_some(
      asio::buffer(read_chunk_.get(), kReadChunk),
      [self = shared_from_this()](const error_code& ec, size_t bytes) { self->OnRead(ec, bytes); });
}

void Connection::OnRead(const error_code& ec, size_t bytes) {
  reading_ = false;
  if (state_ == State::kClosed) return;
  if (ec) {
    // End of stream or a socket error: in every state nothing more can be exchanged, and
    // mid-response this is the client going away (the exchange's OnClose fires).
    Close();
    return;
  }
  if (state_ == State::kLingering) {
    lingered_bytes_ += bytes;
    if (lingered_bytes_ > kMaxLingerBytes) {
      Close();
    } else {
      Read();
    }
    return;
  }
  auto space = buffer_.prepare(bytes);
  std::memcpy(space.data(), read_chunk_.get(), bytes);
  buffer_.commit(bytes);
  if (state_ == State::kReading) ParseBuffered();
  Read();
}

void Connection::ParseBuffered() {
  while (state_ == State::kReading && buffer_.size() > 0) {
    error_code ec;
    size_t used = parser_->put(buffer_.data(), ec);
    buffer_.consume(used);
    if (ec && ec != bhttp::error::need_more) {
      RespondToParseError(ec);
      return;
    }
    if (!header_seen_ && parser_->is_header_done()) OnHeader();
    if (parser_->is_done()) {
      Dispatch();
      return;
    }
    if (ec == bhttp::error::need_more) return;
  }
}

void Connection::OnHeader() {
  header_seen_ = true;
  started_ = Clock::now();
  const auto& header = parser_->get();
  // curl waits for this before sending bodies over 1 KiB.
  if (header.version() >= 11 && !parser_->is_done() &&
      absl::EqualsIgnoreCase(AbslView(View(header[bhttp::field::expect])), "100-continue")) {
    Enqueue(OutChunk{"HTTP/1.1 100 Continue\r\n\r\n"});
  }
}

void Connection::Dispatch() {
  bhttp::request<bhttp::string_body> message = parser_->release();
  state_ = State::kResponding;
  if (!writing_) DisarmTimer();

  HttpRequest request;
  request.method = std::string(View(message.method_string()));
  std::string_view target = View(message.target());
  size_t question = target.find('?');
  request.target = std::string(target.substr(0, question));
  if (question != std::string_view::npos) request.query = std::string(target.substr(question + 1));
  for (const auto& field : message) {
    request.headers.Add(std::string(View(field.name_string())), std::string(View(field.value())));
  }
  request.body = std::move(message.body());
  request.request_id = ResolveRequestId(request.headers.Get("X-Request-Id"));
  request.remote = remote_;

  keep_alive_ = message.keep_alive();
  chunked_ok_ = message.version() >= 11;
  head_request_ = request.method == "HEAD";
  method_ = request.method;
  target_ = request.target;
  request_id_ = request.request_id;
  status_ = 0;
  body_bytes_ = 0;
  logged_ = false;
  exchange_ = std::make_shared<Exchange>();

  auto writer = std::make_shared<ConnectionResponseWriter>(
      exchange_, std::weak_ptr<ResponseSink>(shared_from_this()), context_->gate,
      WriterSettings{request.request_id, chunked_ok_, options_.max_queued_bytes});
  Router::Match match = context_->router.Find(request.method, request.target);
  if (match.handler != nullptr) {
    // Handlers are project code, but an exception must not unwind through the io loop.
    try {
      (*match.handler)(request, writer);
    } catch (const std::exception& e) {
      WriteJsonError(writer, 500, absl::StrCat("handler failed: ", e.what()), "server_error");
    } catch (...) {
      WriteJsonError(writer, 500, "handler failed", "server_error");
    }
  } else if (match.path_found) {
    writer->Send(
        405, "application/json",
        JsonErrorBody(
            405, absl::StrCat("method ", request.method, " is not allowed for ", request.target),
            "invalid_request_error"),
        {{"Allow", absl::StrJoin(match.allowed, ", ")}});
  } else {
    WriteJsonError(writer, 404, absl::StrCat("no route for ", request.target),
                   "invalid_request_error");
  }
}

void Connection::RespondToParseError(const error_code& ec) {
  if (ec == bhttp::error::body_limit) {
    RespondError(
        413, absl::StrCat("request body exceeds the limit of ", options_.max_body_bytes, " bytes"),
        "invalid_request_error");
  } else if (ec == bhttp::error::header_limit) {
    RespondError(
        431,
        absl::StrCat("request header exceeds the limit of ", options_.max_header_bytes, " bytes"),
        "invalid_request_error");
  } else {
    RespondError(400, absl::StrCat("malformed HTTP request: ", ec.message()),
                 "invalid_request_error");
  }
}

void Connection::RespondError(int status, std::string_view message, std::string_view type) {
  state_ = State::kResponding;
  keep_alive_ = false;
  exchange_.reset();
  if (header_seen_) {
    method_ = std::string(View(parser_->get().method_string()));
    target_ = std::string(View(parser_->get().target()));
  } else {
    method_ = "-";
    target_ = "-";
    started_ = Clock::now();
  }
  request_id_ = GenerateRequestId();
  status_ = status;
  body_bytes_ = 0;
  logged_ = false;
  std::string body = JsonErrorBody(status, message, type);
  std::string bytes = FormatResponseHead(status, {{"X-Request-Id", request_id_},
                                                  {"Content-Type", "application/json"},
                                                  {"Content-Length", std::to_string(body.size())},
                                                  {"Connection", "close"}});
  const size_t payload = body.size();
  bytes += body;
  Enqueue(OutChunk{std::move(bytes), payload, true});
}

void Connection::BeginResponse(std::shared_ptr<Exchange> exchange, int status, HeaderList headers,
                               std::string body, bool streaming) {
  OnStrand([exchange = std::move(exchange), status, headers = std::move(headers),
            body = std::move(body), streaming](Connection& self) mutable {
    if (self.state_ != State::kResponding || exchange != self.exchange_) return;
    self.status_ = status;
    if (self.context_->draining.load()) self.keep_alive_ = false;
    // HTTP/1.0 has no chunked coding: the stream ends when the connection does.
    if (streaming && !self.chunked_ok_) self.keep_alive_ = false;
    HeaderList head;
    head.reserve(headers.size() + 4);
    head.emplace_back("X-Request-Id", self.request_id_);
    for (auto& header : headers) {
      if (!IsTransportHeader(header.first)) head.push_back(std::move(header));
    }
    const bool bodiless = status < 200 || status == 204 || status == 304;
    if (streaming) {
      if (self.chunked_ok_) head.emplace_back("Transfer-Encoding", "chunked");
    } else if (!bodiless) {
      head.emplace_back("Content-Length", std::to_string(body.size()));
    }
    head.emplace_back("Connection", self.keep_alive_ ? "keep-alive" : "close");
    std::string bytes = FormatResponseHead(status, head);
    size_t payload = 0;
    if (!self.head_request_ && !bodiless) {
      payload = body.size();
      bytes += body;
    }
    self.Enqueue(OutChunk{std::move(bytes), payload, !streaming});
  });
}

void Connection::AppendBody(std::shared_ptr<Exchange> exchange, std::string framed,
                            size_t payload_bytes) {
  OnStrand([exchange = std::move(exchange), framed = std::move(framed),
            payload_bytes](Connection& self) mutable {
    if (self.state_ != State::kResponding || exchange != self.exchange_) return;
    if (self.head_request_) {
      exchange->ReleaseQueued(framed.size());
      return;
    }
    self.Enqueue(OutChunk{std::move(framed), payload_bytes, false, std::move(exchange)});
  });
}

void Connection::EndResponse(std::shared_ptr<Exchange> exchange) {
  OnStrand([exchange = std::move(exchange)](Connection& self) {
    if (self.state_ != State::kResponding || exchange != self.exchange_) return;
    const bool last_chunk = self.chunked_ok_ && !self.head_request_;
    self.Enqueue(OutChunk{last_chunk ? std::string(kLastChunk) : std::string(), 0, true});
  });
}

void Connection::Abort(std::shared_ptr<Exchange> exchange) {
  OnStrand([exchange = std::move(exchange)](Connection& self) {
    if (self.state_ == State::kResponding && exchange == self.exchange_) self.Close();
  });
}

void Connection::Drain() {
  OnStrand([](Connection& self) {
    if (self.state_ == State::kReading && !self.parser_->got_some() && self.buffer_.size() == 0) {
      self.Close();
    }
  });
}

void Connection::ForceClose() {
  OnStrand([](Connection& self) { self.Close(); });
}

void Connection::Enqueue(OutChunk chunk) {
  out_.push_back(std::move(chunk));
  Write();
}

void Connection::Write() {
  if (writing_ || out_.empty() || state_ == State::kClosed) return;
  writing_ = true;
  write_count_ = std::min(out_.size(), kMaxWriteBatch);
  write_buffers_.clear();
  for (size_t i = 0; i < write_count_; ++i) write_buffers_.push_back(asio::buffer(out_[i].data));
  // A client that stops reading must not hold the connection forever.
  ArmTimer(idle_timeout());
  asio::async_write(
      socket_, write_buffers_,
      [self = shared_from_this()](const error_code& ec, size_t) { self->OnWrite(ec); });
}

void Connection::OnWrite(const error_code& ec) {
  writing_ = false;
  if (state_ == State::kClosed) return;
  if (ec) {
    Close();
    return;
  }
  bool finished = false;
  for (size_t i = 0; i < write_count_; ++i) {
    OutChunk& chunk = out_.front();
    if (chunk.exchange != nullptr) chunk.exchange->ReleaseQueued(chunk.data.size());
    body_bytes_ += chunk.payload_bytes;
    finished = finished || chunk.ends_response;
    out_.pop_front();
  }
  if (finished) {
    FinishResponse();
    if (state_ == State::kClosed) return;
  }
  if (!out_.empty()) {
    Write();
  } else if (state_ == State::kResponding) {
    DisarmTimer();
  }
}

void Connection::FinishResponse() {
  LogRequest(status_);
  exchange_.reset();
  if (keep_alive_ && !context_->draining.load()) {
    state_ = State::kReading;
    NewParser();
    ArmTimer(idle_timeout());
    ParseBuffered();  // a pipelined request may be waiting
    Read();
  } else {
    StartLinger();
  }
}

void Connection::StartLinger() {
  state_ = State::kLingering;
  error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_send, ignored);
  buffer_.consume(buffer_.size());
  ArmTimer(std::min<Clock::duration>(kLingerTime, idle_timeout()));
  Read();
}

void Connection::WaitTimer() {
  timer_.async_wait([self = shared_from_this()](const error_code& ec) {
    if (self->state_ == State::kClosed) return;
    // Re-arming cancels the wait; only a deadline that really passed closes.
    if (!ec && self->timer_.expiry() <= Clock::now()) {
      self->Close();
      return;
    }
    self->WaitTimer();
  });
}

void Connection::Close() {
  if (state_ == State::kClosed) return;
  const bool mid_response = state_ == State::kResponding;
  state_ = State::kClosed;
  error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  timer_.cancel();
  if (mid_response && !logged_) LogRequest(status_ == 0 ? 499 : status_);
  if (std::shared_ptr<Exchange> exchange = std::move(exchange_)) exchange->MarkClosed();
}

void Connection::LogRequest(int status) {
  if (logged_) return;
  logged_ = true;
  if (!options_.access_log) return;
  AccessLogEntry entry;
  entry.method = method_;
  entry.target = target_;
  entry.status = status;
  entry.body_bytes = body_bytes_;
  entry.duration_ms = std::chrono::duration<double, std::milli>(Clock::now() - started_).count();
  entry.request_id = request_id_;
  entry.remote = remote_;
  options_.access_log(entry);
}

}  // namespace

void StartConnection(tcp::socket socket, std::shared_ptr<ServerContext> context, bool reject) {
  auto connection = std::make_shared<Connection>(std::move(socket), context);
  connection->set_id(context->registry.Add(connection));
  // Everything a connection does runs on its strand, Start included.
  asio::post(connection->executor(), [connection, reject] { connection->Start(reject); });
}

}  // namespace tessera::http
