// Registered worker daemons: their capabilities, leases, control streams and current job.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
#include "dgptq/v1/worker.pb.h"

namespace dgptq::coordinator {

// Messages waiting to be written to one worker's control stream. The coordinator pushes from
// any thread; the stream's handler is the only one that pops and writes, so writes to a
// stream never interleave. Thread-safe.
class ControlOutbox {
 public:
  // Queues `msg`; false (and dropped) once closed.
  bool Push(v1::ControlResponse msg);
  // Blocks until a message is queued (returns it) or the outbox is closed and drained
  // (returns nullopt).
  std::optional<v1::ControlResponse> Pop();
  // Wakes Pop; later pushes are dropped. Idempotent.
  void Close();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::ControlResponse> queue_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

struct WorkerEntry {
  std::string id;
  std::string name;
  v1::WorkerCapabilities caps;
  int64_t seq = 0;  // registration order
  absl::Time lease_expiry;
  std::shared_ptr<ControlOutbox> outbox;  // null until the control stream's hello
  std::string job_id;                     // job it is reserved for or running; empty: idle

  bool connected() const { return outbox != nullptr; }
  bool idle() const { return job_id.empty(); }
};

// Thread-safety: none; the Coordinator calls it under its own mutex.
class WorkerRegistry {
 public:
  // `tag` goes into every id (InstanceTag()).
  explicit WorkerRegistry(std::string tag) : tag_(std::move(tag)) {}

  // Adds a worker with a fresh id ("w-" + tag + "-" + a counter).
  WorkerEntry& Add(std::string name, v1::WorkerCapabilities caps, absl::Time lease_expiry);
  WorkerEntry* Find(const std::string& id);
  // Closes its outbox (ending its control stream) and forgets it.
  void Remove(const std::string& id);

  // Connected idle workers that can run `kind` (UNSPECIFIED: any), in registration order.
  std::vector<WorkerEntry*> Idle(v1::DeviceKind kind);
  // Workers whose lease ended before `now`.
  std::vector<std::string> Expired(absl::Time now) const;
  // Every worker (for shutdown).
  std::vector<WorkerEntry*> All();

 private:
  const std::string tag_;
  std::map<std::string, WorkerEntry> workers_;
  int64_t next_seq_ = 1;
};

// A short random tag, new for every Coordinator, put into the ids and tokens it hands out so
// that those of an earlier coordinator (before a restart) never name something of this one.
std::string InstanceTag();

}  // namespace dgptq::coordinator
