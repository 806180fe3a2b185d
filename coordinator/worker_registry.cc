#include "coordinator/worker_registry.h"

#include <algorithm>
#include <random>
#include <utility>

#include "absl/strings/str_format.h"

namespace dgptq::coordinator {

bool ControlOutbox::Push(v1::ControlResponse msg) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return false;
    queue_.push_back(std::move(msg));
  }
  cv_.notify_one();
  return true;
}

std::optional<v1::ControlResponse> ControlOutbox::Pop() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return closed_ || !queue_.empty(); });
  if (queue_.empty()) return std::nullopt;
  v1::ControlResponse msg = std::move(queue_.front());
  queue_.pop_front();
  return msg;
}

void ControlOutbox::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
}

std::string InstanceTag() {
  std::random_device rd;
  return absl::StrFormat("%06x", rd() & 0xffffff);
}

WorkerEntry& WorkerRegistry::Add(std::string name, v1::WorkerCapabilities caps,
                                 absl::Time lease_expiry) {
  const int64_t seq = next_seq_++;
  const std::string id = absl::StrFormat("w-%s-%d", tag_, seq);
  WorkerEntry& w = workers_[id];
  w.id = id;
  w.name = std::move(name);
  w.caps = std::move(caps);
  w.seq = seq;
  w.lease_expiry = lease_expiry;
  return w;
}

WorkerEntry* WorkerRegistry::Find(const std::string& id) {
  auto it = workers_.find(id);
  return it == workers_.end() ? nullptr : &it->second;
}

void WorkerRegistry::Remove(const std::string& id) {
  auto it = workers_.find(id);
  if (it == workers_.end()) return;
  if (it->second.outbox) it->second.outbox->Close();
  workers_.erase(it);
}

std::vector<WorkerEntry*> WorkerRegistry::Idle(v1::DeviceKind kind) {
  std::vector<WorkerEntry*> out;
  for (auto& [id, w] : workers_) {
    const bool kind_ok = kind == v1::DEVICE_KIND_UNSPECIFIED || w.caps.device_kind() == kind;
    if (w.connected() && w.idle() && kind_ok) out.push_back(&w);
  }
  std::sort(out.begin(), out.end(), [](auto* a, auto* b) { return a->seq < b->seq; });
  return out;
}

std::vector<std::string> WorkerRegistry::Expired(absl::Time now) const {
  std::vector<std::string> out;
  for (const auto& [id, w] : workers_) {
    if (w.lease_expiry < now) out.push_back(id);
  }
  return out;
}

std::vector<WorkerEntry*> WorkerRegistry::All() {
  std::vector<WorkerEntry*> out;
  for (auto& [id, w] : workers_) out.push_back(&w);
  return out;
}

}  // namespace dgptq::coordinator
