// The coordinator's record of jobs and their event logs. Everything is held in memory; a
// durable store (Open, issue 6) also writes every change through to `DIR/jobs.db` (job_db.h)
// before the method returns, so that a coordinator killed at any point restarts with every
// job, its state and its events.
//
// When a write fails (a full disk, an I/O error) the change still takes effect in memory, the
// error is logged once, and the job's unsaved changes are written with its next change or by
// RetryUnsaved(); on disk every job is a consistent earlier version of itself (row and events
// go in one transaction). Create is the exception: a job that cannot be saved is not created.
//
// Thread-safety: none; the Coordinator calls it under its own mutex.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dgptq/v1/job.pb.h"

namespace dgptq::coordinator {

class JobDb;

class JobStore {
 public:
  // In memory: nothing outlives the store; tag() is new for every store.
  JobStore();
  // Durable: opens `state_dir`/jobs.db (created when missing) and loads every job and event
  // it holds. JobDb::Open's codes; every message names the file.
  static absl::StatusOr<JobStore> Open(const std::string& state_dir);
  JobStore(JobStore&&) noexcept;
  JobStore& operator=(JobStore&&) noexcept;
  ~JobStore();

  // A random tag for job ids and page tokens: kept in the database by a durable store, so
  // the ids and tokens of an earlier run on the same state directory stay valid and those of
  // another store never match.
  const std::string& tag() const { return tag_; }
  // The database file; empty in memory.
  std::string path() const;

  // Stores a new job (its job_id set, unique) as QUEUED with event 0 =
  // StateChange(UNSPECIFIED -> QUEUED, reason); sets create/update time and event_count.
  // The database's error (and nothing stored) when a durable store cannot save it.
  absl::StatusOr<const v1::Job*> Create(v1::Job job, const std::string& reason, absl::Time now);

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
  // Writes the changes that failed to save earlier, if any.
  void RetryUnsaved();

  // Events [from, event_count) of a job; `from` must be within [0, event_count].
  std::vector<v1::JobEvent> Events(const std::string& job_id, int64_t from) const;

  // One page of jobs newest first, in `states` (all when empty), created before the job with
  // sequence number `before` (0: from the newest). `*last` receives the sequence number of
  // the page's last job and `*more` whether older matching jobs remain.
  std::vector<v1::Job> List(const std::vector<v1::JobState>& states, int64_t before, int limit,
                            int64_t* last, bool* more) const;
  // Ids of the QUEUED, PLANNING and RUNNING jobs, oldest first.
  std::vector<std::string> Unfinished() const;
  // Number of jobs created so far; sequence numbers are 1..size().
  int64_t size() const { return static_cast<int64_t>(by_seq_.size()); }

 private:
  struct Entry {
    int64_t seq = 0;
    v1::Job job;
    std::vector<v1::JobEvent> events;
    size_t saved_events = 0;  // events[0, saved_events) are in the database
  };
  Entry& At(const std::string& job_id);
  Entry& Insert(int64_t seq, v1::Job job, std::vector<v1::JobEvent> events);
  // Writes the job's row and its unsaved events (durable stores only).
  void Save(Entry& e);

  std::string tag_;
  std::unique_ptr<JobDb> db_;  // null in memory
  std::map<std::string, Entry> jobs_;
  std::vector<const Entry*> by_seq_;  // index seq - 1
  std::map<std::string, std::string> by_request_id_;
  std::set<std::string> unsaved_;  // jobs whose last Save failed
};

// Seconds-and-nanos conversions of absl::Time for the proto timestamps.
google::protobuf::Timestamp ToTimestamp(absl::Time t);
absl::Time FromTimestamp(const google::protobuf::Timestamp& t);

}  // namespace dgptq::coordinator
