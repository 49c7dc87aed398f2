// Exchange bookkeeping and the ResponseWriter that feeds a connection.
#include "server/http/exchange.h"

#include "absl/strings/match.h"
#include "server/http/wire_format.h"

namespace tessera::http {

void Exchange::MarkClosed() {
  std::function<void()> callback;
  {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    if (phase_ != Phase::kDone) callback = std::move(on_close_);
    on_close_ = nullptr;
  }
  if (callback) callback();
}

ConnectionResponseWriter::ConnectionResponseWriter(std::shared_ptr<Exchange> exchange,
                                                   std::weak_ptr<ResponseSink> sink,
                                                   std::shared_ptr<WriterGate> gate,
                                                   WriterSettings settings)
    : exchange_(std::move(exchange)),
      sink_(std::move(sink)),
      gate_(std::move(gate)),
      settings_(std::move(settings)) {}

ConnectionResponseWriter::~ConnectionResponseWriter() {
  Exchange::Phase phase;
  {
    absl::MutexLock lock(&exchange_->mu_);
    if (exchange_->closed_) return;
    phase = exchange_->phase_;
  }
  if (phase == Exchange::Phase::kIdle) {
    WriteJsonError(*this, 500, "the handler finished without a response", "server_error");
  } else if (phase == Exchange::Phase::kStreaming) {
    EndStream();
  }
}

bool ConnectionResponseWriter::ToSink(const std::function<void(ResponseSink&)>& call) {
  bool delivered = false;
  {
    absl::ReaderMutexLock gate_lock(&gate_->mu);
    if (gate_->open) {
      // The strong reference must not outlive the gate lock: the last one may destroy the
      // connection, which needs the io context alive.
      if (std::shared_ptr<ResponseSink> sink = sink_.lock()) {
        call(*sink);
        delivered = true;
      }
    }
  }
  if (!delivered) exchange_->closed_ = true;
  return delivered;
}

bool ConnectionResponseWriter::Send(int status, std::string_view content_type, std::string body,
                                    const HeaderList& extra_headers) {
  HeaderList headers;
  headers.reserve(extra_headers.size() + 1);
  headers.emplace_back("Content-Type", std::string(content_type));
  for (const auto& header : extra_headers) {
    if (!absl::EqualsIgnoreCase(header.first, "Content-Type")) headers.push_back(header);
  }
  absl::MutexLock lock(&exchange_->mu_);
  if (exchange_->closed_ || exchange_->phase_ != Exchange::Phase::kIdle) return false;
  exchange_->phase_ = Exchange::Phase::kDone;
  // Posting under the exchange lock keeps calls from different threads in order.
  return ToSink([&](ResponseSink& sink) {
    sink.BeginResponse(exchange_, status, std::move(headers), std::move(body), false);
  });
}

bool ConnectionResponseWriter::StartStream(int status, const HeaderList& headers) {
  HeaderList all = headers;
  bool has_type = false;
  for (const auto& header : headers) {
    has_type = has_type || absl::EqualsIgnoreCase(header.first, "Content-Type");
  }
  if (!has_type) all.emplace_back("Content-Type", "text/event-stream");
  all.emplace_back("Cache-Control", "no-cache");
  // Keeps buffering proxies (nginx) from holding events back.
  all.emplace_back("X-Accel-Buffering", "no");
  absl::MutexLock lock(&exchange_->mu_);
  if (exchange_->closed_ || exchange_->phase_ != Exchange::Phase::kIdle) return false;
  exchange_->phase_ = Exchange::Phase::kStreaming;
  return ToSink([&](ResponseSink& sink) {
    sink.BeginResponse(exchange_, status, std::move(all), std::string(), true);
  });
}

bool ConnectionResponseWriter::SendEvent(std::string_view data) {
  std::string event = FormatSseEvent(data);
  const size_t payload = event.size();
  std::string framed = settings_.chunked ? FormatChunk(event) : std::move(event);
  const size_t size = framed.size();
  absl::MutexLock lock(&exchange_->mu_);
  if (exchange_->closed_ || exchange_->phase_ != Exchange::Phase::kStreaming) return false;
  if (exchange_->queued_bytes() + size > settings_.max_queued_bytes) {
    // The client reads slower than we produce: drop it rather than buffer without bound.
    exchange_->closed_ = true;
    ToSink([&](ResponseSink& sink) { sink.Abort(exchange_); });
    return false;
  }
  exchange_->queued_bytes_.fetch_add(size, std::memory_order_relaxed);
  return ToSink(
      [&](ResponseSink& sink) { sink.AppendBody(exchange_, std::move(framed), payload); });
}

bool ConnectionResponseWriter::EndStream() {
  absl::MutexLock lock(&exchange_->mu_);
  if (exchange_->closed_ || exchange_->phase_ != Exchange::Phase::kStreaming) return false;
  exchange_->phase_ = Exchange::Phase::kDone;
  return ToSink([&](ResponseSink& sink) { sink.EndResponse(exchange_); });
}

bool ConnectionResponseWriter::closed() const {
  absl::MutexLock lock(&exchange_->mu_);
  return exchange_->closed_ || exchange_->phase_ == Exchange::Phase::kDone;
}

void ConnectionResponseWriter::OnClose(std::function<void()> callback) {
  {
    absl::MutexLock lock(&exchange_->mu_);
    if (exchange_->phase_ == Exchange::Phase::kDone) return;
    if (!exchange_->closed_) {
      exchange_->on_close_ = std::move(callback);
      return;
    }
  }
  if (callback) callback();
}

}  // namespace tessera::http
