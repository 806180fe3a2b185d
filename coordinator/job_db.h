// The SQLite file behind a durable JobStore (issue 6): `DIR/jobs.db`, one row per job (its
// serialized v1::Job with the indexed columns seq, job_id, request_id, state) and one per
// event (the serialized v1::JobEvent, keyed (job_id, idx)).
//
// Settings, and why:
// - WAL journal: a commit appends to jobs.db-wal; a process killed at any point (SIGKILL
//   included) leaves the last committed transaction readable by the next open.
// - synchronous=FULL: the WAL is fsynced on every commit, so a commit also survives a power
//   loss or an OS crash (NORMAL survives a process crash only). A job changes about 12 times
//   per rank and layer, so the cost (one fdatasync per change: 3.9 ms on the project's VM,
//   0.1 ms with NORMAL) is small against the pipeline's seconds per layer.
// - locking_mode=EXCLUSIVE: the coordinator holds the file's lock from Open on; a second
//   coordinator on the same directory waits the 5 s busy timeout and fails with UNAVAILABLE.
//   The kernel drops the lock when the process dies, however it dies.
// - PRAGMA application_id marks the file as ours; PRAGMA user_version is the schema version
//   (1). Open refuses any other file and never changes or deletes what it refuses.
//
// Thread-safety: none; the JobStore's owner serializes calls.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dgptq/v1/job.pb.h"

struct sqlite3;
struct sqlite3_stmt;

namespace dgptq::coordinator {

class JobDb {
 public:
  struct StoredJob {
    int64_t seq = 0;  // creation order, 1-based and dense
    v1::Job job;
    std::vector<v1::JobEvent> events;  // indices 0 .. job.event_count() - 1
  };
  struct Contents {
    std::string tag;              // random, set when the file was created
    std::vector<StoredJob> jobs;  // by seq: jobs[i].seq == i + 1
  };

  // Opens `state_dir`/jobs.db, creating the directory and an empty database (with a fresh
  // tag) when missing, checks it (quick_check) and reads everything into `*contents`. Every
  // error names the file: FailedPrecondition when the directory or file cannot be created or
  // opened, or the file is another application's database or of another schema version;
  // DataLoss when it is corrupt, not a database, or its rows disagree (a gap in seq or in a
  // job's events); Unavailable when another process holds it.
  static absl::StatusOr<std::unique_ptr<JobDb>> Open(const std::string& state_dir,
                                                     Contents* contents);
  ~JobDb();
  JobDb(const JobDb&) = delete;
  JobDb& operator=(const JobDb&) = delete;

  // The database file.
  const std::string& path() const { return path_; }

  // Writes `job` as row `seq` (inserted or replaced) and `events` (inserted or replaced by
  // their index) in one transaction: all of it is durable when this returns OK, none of it
  // when not. ResourceExhausted for a full disk, Unavailable when the file is locked, Internal
  // for other SQLite errors; the message names the file.
  absl::Status Put(int64_t seq, const v1::Job& job, std::span<const v1::JobEvent> events);

 private:
  explicit JobDb(std::string path) : path_(std::move(path)) {}
  absl::Status Error(const std::string& what) const;
  absl::Status Exec(const char* sql, const std::string& what);
  absl::Status Prepare(const char* sql, sqlite3_stmt** stmt, const std::string& what);
  absl::Status Setup();
  absl::Status CheckOurs();
  absl::Status Load(Contents* contents);
  absl::Status PutRows(int64_t seq, const v1::Job& job, std::span<const v1::JobEvent> events);

  std::string path_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* put_job_ = nullptr;
  sqlite3_stmt* put_event_ = nullptr;
};

}  // namespace dgptq::coordinator
