// The state one request/response shares between its ResponseWriter (called from any
// thread) and its connection (which owns the socket and runs on an io strand).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/http/http_types.h"
#include "server/http/response_writer.h"

namespace tessera::http {

// Lets writers hand work to connections only while the io threads exist: Shutdown closes
// it (exclusively) before the io context goes away.
struct WriterGate {
  absl::Mutex mu;
  bool open ABSL_GUARDED_BY(mu) = true;
};

class Exchange {
 public:
  enum class Phase { kIdle, kStreaming, kDone };

  // Connection side: the connection is gone. Fires the OnClose callback unless the
  // response was already complete.
  void MarkClosed();
  size_t queued_bytes() const { return queued_bytes_.load(std::memory_order_relaxed); }
  void ReleaseQueued(size_t bytes) { queued_bytes_.fetch_sub(bytes, std::memory_order_relaxed); }

 private:
  friend class ConnectionResponseWriter;
  mutable absl::Mutex mu_;
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kIdle;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> on_close_ ABSL_GUARDED_BY(mu_);
  // Bytes handed to the connection and not yet written to the socket.
  std::atomic<size_t> queued_bytes_{0};
};

// What a writer asks of its connection. Implementations move each call onto the
// connection's strand, in call order, and ignore calls for an exchange that is not current.
class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  virtual void BeginResponse(std::shared_ptr<Exchange> exchange, int status, HeaderList headers,
                             std::string body, bool streaming) = 0;
  virtual void AppendBody(std::shared_ptr<Exchange> exchange, std::string framed,
                          size_t payload_bytes) = 0;
  virtual void EndResponse(std::shared_ptr<Exchange> exchange) = 0;
  virtual void Abort(std::shared_ptr<Exchange> exchange) = 0;
};

struct WriterSettings {
  std::string request_id;
  bool chunked = true;  // false for HTTP/1.0 clients: streams are close-delimited
  size_t max_queued_bytes = 4 << 20;
};

class ConnectionResponseWriter final : public ResponseWriter {
 public:
  ConnectionResponseWriter(std::shared_ptr<Exchange> exchange, std::weak_ptr<ResponseSink> sink,
                           std::shared_ptr<WriterGate> gate, WriterSettings settings);
  // A handler that drops its writer without finishing still ends the exchange: 500 when
  // nothing was sent, a terminated stream when one was started.
  ~ConnectionResponseWriter() override;

  bool Send(int status, std::string_view content_type, std::string body,
            const HeaderList& extra_headers) override;
  bool StartStream(int status, const HeaderList& headers) override;
  bool SendEvent(std::string_view data) override;
  bool EndStream() override;
  bool closed() const override;
  void OnClose(std::function<void()> callback) override;
  const std::string& request_id() const override { return settings_.request_id; }

 private:
  // Runs `call` on the sink while the gate is open; false (and the exchange closed) when
  // the connection is gone. Called with exchange_->mu_ held.
  bool ToSink(const std::function<void(ResponseSink&)>& call);

  std::shared_ptr<Exchange> exchange_;
  std::weak_ptr<ResponseSink> sink_;
  std::shared_ptr<WriterGate> gate_;
  const WriterSettings settings_;
};

}  // namespace tessera::http
