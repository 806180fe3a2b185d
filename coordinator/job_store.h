// The coordinator's record of jobs and their event logs. In memory for now; a durable store
// (SQLite) replaces this class behind the same methods.
//
// Thread-safety: none; the Coordinator calls it under its own mutex.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "dgptq/v1/job.pb.h"

namespace dgptq::coordinator {

class JobStore {
 public:
  // Stores a new job (its job_id set, unique) as QUEUED with event 0 =
  // StateChange(UNSPECIFIED -> QUEUED, reason); sets create/update time and event_count.
  const v1::Job& Create(v1::Job job, const std::string& reason, absl::Time now);

  // Null when unknown. Pointers stay valid until the store is destroyed.
  const v1::Job* Get(const std::string& job_id) const;
  // The job created with `request_id` (non-empty), or null.
  const v1::Job* GetByRequestId(const std::string& request_id) const;

  // Moves a job to `to`, sets reason and update_time and appends StateChange(from -> to).
  // The job must exist.
  void Transition(const std::string& job_id, v1::JobState to, const std::string& reason,
                  absl::Time now);
  // Appends an event, setting its index, job_id and time. The job must exist.
  void Append(const std::string& job_id, v1::JobEvent event, absl::Time now);
  // Changes fields of a job other than state, reason and event_count.
  void Update(const std::string& job_id, const std::function<void(v1::Job*)>& change);

  // Events [from, event_count) of a job; `from` must be within [0, event_count].
  std::vector<v1::JobEvent> Events(const std::string& job_id, int64_t from) const;

  // One page of jobs newest first, in `states` (all when empty), created before the job with
  // sequence number `before` (0: from the newest). `*last` receives the sequence number of
  // the page's last job and `*more` whether older matching jobs remain.
  std::vector<v1::Job> List(const std::vector<v1::JobState>& states, int64_t before, int limit,
                            int64_t* last, bool* more) const;
  // Number of jobs created so far; sequence numbers are 1..size().
  int64_t size() const { return static_cast<int64_t>(by_seq_.size()); }

 private:
  struct Entry {
    int64_t seq = 0;
    v1::Job job;
    std::vector<v1::JobEvent> events;
  };
  Entry& At(const std::string& job_id);

  std::map<std::string, Entry> jobs_;
  std::vector<const Entry*> by_seq_;  // index seq - 1
  std::map<std::string, std::string> by_request_id_;
};

// Seconds-and-nanos conversions of absl::Time for the proto timestamps.
google::protobuf::Timestamp ToTimestamp(absl::Time t);
absl::Time FromTimestamp(const google::protobuf::Timestamp& t);

}  // namespace dgptq::coordinator
