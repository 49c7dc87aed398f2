// The registry of live connections.
#include "server/http/server_context.h"

namespace tessera::http {

uint64_t ConnectionRegistry::Add(std::weak_ptr<ConnectionControl> connection) {
  absl::MutexLock lock(&mu_);
  uint64_t id = ++next_id_;
  connections_.emplace(id, std::move(connection));
  return id;
}

void ConnectionRegistry::Remove(uint64_t id) {
  absl::MutexLock lock(&mu_);
  connections_.erase(id);
}

size_t ConnectionRegistry::size() const {
  absl::MutexLock lock(&mu_);
  return connections_.size();
}

std::vector<std::shared_ptr<ConnectionControl>> ConnectionRegistry::Snapshot() const {
  std::vector<std::shared_ptr<ConnectionControl>> out;
  absl::MutexLock lock(&mu_);
  out.reserve(connections_.size());
  for (const auto& [id, weak] : connections_) {
    if (auto connection = weak.lock()) out.push_back(std::move(connection));
  }
  return out;
}

bool ConnectionRegistry::AwaitEmpty(absl::Time deadline) const {
  absl::MutexLock lock(&mu_);
  auto empty = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return connections_.empty(); };
  return mu_.AwaitWithDeadline(absl::Condition(&empty), deadline);
}

}  // namespace tessera::http
