// What the server shares with all of its connections: options, routes, the drain flag,
// the writer gate and the registry of live connections.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/http/exchange.h"
#include "server/http/http_server.h"
#include "server/http/router.h"

namespace tessera::http {

// The server's view of a connection; both calls may come from any thread.
class ConnectionControl {
 public:
  virtual ~ConnectionControl() = default;
  // Closes the connection if it is between requests; otherwise it closes after the
  // response in flight.
  virtual void Drain() = 0;
  virtual void ForceClose() = 0;
};

class ConnectionRegistry {
 public:
  uint64_t Add(std::weak_ptr<ConnectionControl> connection);
  void Remove(uint64_t id);
  size_t size() const;
  std::vector<std::shared_ptr<ConnectionControl>> Snapshot() const;
  // True when the registry became empty before `deadline`.
  bool AwaitEmpty(absl::Time deadline) const;

 private:
  mutable absl::Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::unordered_map<uint64_t, std::weak_ptr<ConnectionControl>> connections_ ABSL_GUARDED_BY(mu_);
};

struct ServerContext {
  HttpServerOptions options;
  Router router;  // read-only once the server started
  std::atomic<bool> draining{false};
  std::shared_ptr<WriterGate> gate = std::make_shared<WriterGate>();
  ConnectionRegistry registry;
};

}  // namespace tessera::http
