// The coordinator's core, free of gRPC: the job queue and store, the worker registry with
// leases, the scheduler (FIFO over idle workers), the rendezvous relay and the bookkeeping of
// what ranks report. CoordinatorService is a thin gRPC shell over it.
//
// A job moves QUEUED -> PLANNING -> RUNNING -> SUCCEEDED | FAILED | CANCELLED (job.proto);
// every change appends a StateChange event. The scheduler thread starts the oldest queued job
// that enough idle, connected workers of its device kind can run (a job behind one that
// cannot start may start first if it fits): it reserves the workers (ranks in registration
// order), plans the checkpoint, sends CreateRendezvous to rank 0 and, on rank 0's
// RendezvousOffer, an Assignment to every rank. The job succeeds when every rank reported
// WorkerResult code 0 and fails on the first non-zero code, a fatal ErrorDetail or a
// rendezvous timeout; the other ranks then get StopJob. A lost or disconnected worker (and a
// rank's communicator error, held kHoldRankFailure for the lost peer that usually explains
// it) re-queues the job instead, up to --max-job-retries times: it is re-planned over the
// workers still registered and resumes from the layers its partial output holds. A worker is
// idle again once it sent its WorkerResult for the job (at once if the job ended before its
// Assignment).
//
// With a durable JobStore (--state-dir, issue 6) a new Coordinator picks up what an earlier
// one left: QUEUED jobs go back in the queue in their order, PLANNING and RUNNING ones (their
// workers went with the old process) are moved back to QUEUED with a StateChange event and
// queued too (they resume from their partial output); terminal jobs stay as they are. Workers
// are not kept: they register again.
//
// Thread-safety: every public method may be called from any thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/job_store.h"
#include "coordinator/metrics.h"
#include "coordinator/options.h"
#include "coordinator/planner.h"
#include "coordinator/worker_registry.h"
#include "dgptq/v1/coordinator.pb.h"
#include "proto/job_spec.h"

namespace dgptq::coordinator {

class Coordinator {
 public:
  // Reports to `metrics` (not owned; it must outlive the core); null: to metrics of its own,
  // served nowhere. Keeps jobs in `store` (JobStore::Open for a durable one; the default
  // keeps them in memory) and re-queues the unfinished jobs it holds.
  explicit Coordinator(CoordinatorOptions options, CoordinatorMetrics* metrics = nullptr,
                       JobStore store = JobStore());
  ~Coordinator();  // Stop()
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Starts the scheduler and lease-reaper threads.
  void Start();
  // Closes every control stream's outbox, makes WaitEvents (and Submit) return Unavailable
  // "coordinator shutting down" and joins the threads. Idempotent.
  void Stop();

  // ---- client API (coordinator.proto)
  struct Submitted {
    v1::Job job;
    bool created = false;
  };
  // ValidateJob's codes, then ResourceExhausted when --max-queued-jobs jobs are queued,
  // Unavailable once stopping. A known non-empty request_id returns its job with
  // created = false.
  absl::StatusOr<Submitted> Submit(const v1::JobSpec& spec, const std::string& request_id);
  // NotFound for an unknown id.
  absl::StatusOr<v1::Job> GetJob(const std::string& job_id);
  // InvalidArgument for a negative page_size or a page_token this process did not issue.
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest& req);
  struct EventBatch {
    std::vector<v1::JobEvent> events;  // indices from, from + 1, ...
    bool done = false;                 // the job is terminal and `events` ends its log
  };
  // Events from `from` on, waiting up to `timeout` for one when there is none yet (an empty
  // batch then). NotFound, OutOfRange for `from` beyond the log's end (InvalidArgument when
  // negative), Unavailable once stopping.
  absl::StatusOr<EventBatch> WaitEvents(const std::string& job_id, int64_t from,
                                        absl::Duration timeout);
  // QUEUED/PLANNING/RUNNING -> CANCELLED with `reason` ("cancelled by user" when empty) and
  // StopJob to every rank; a terminal job is returned unchanged. NotFound for an unknown id.
  absl::StatusOr<v1::Job> Cancel(const std::string& job_id, const std::string& reason);

  // ---- worker API (worker.proto)
  v1::RegisterWorkerResponse Register(const v1::RegisterWorkerRequest& req);
  // Renews the lease. NotFound for an unknown (or already lost) worker.
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& req);
  // The control stream's hello: the outbox the stream's handler drains. NotFound for an
  // unknown worker, FailedPrecondition when it already has an open stream.
  absl::StatusOr<std::shared_ptr<ControlOutbox>> Connect(const std::string& worker_id);
  // A message after the hello on the control stream of `worker_id`.
  void OnControl(const std::string& worker_id, const v1::ControlRequest& msg);
  // The control stream that got `outbox` ended: the worker is lost ("disconnected").
  void Disconnect(const std::string& worker_id, const ControlOutbox* outbox);

 private:
  // Runtime state of a QUEUED, PLANNING or RUNNING job.
  struct ActiveJob {
    ResolvedJobSpec spec;
    std::vector<std::string> ranks;  // worker ids in rank order, from PLANNING on
    std::vector<bool> finished;      // rank sent WorkerResult code 0
    std::vector<int> layers_done;    // per rank: 1 + highest layer it finished writing
    std::string backend;             // "host" or "nccl"
    std::optional<Plan> plan;
    absl::Time rendezvous_deadline = absl::InfiniteFuture();
    bool assigned = false;  // Assignments sent (RUNNING)
    int attempt = 0;        // times the job was re-queued after a lost worker (Job.retries)
    std::string requeued_because;  // the last re-queue's reason, kept in the queue reason
    // A rank's failure that a lost peer may explain (UNAVAILABLE, ...), held back until
    // `failure_deadline`: the lost worker, reported meanwhile, is the better reason.
    std::string held_failure;
    absl::Time failure_deadline = absl::InfiniteFuture();
  };

  // scheduler.cc
  void SchedulerLoop();
  std::vector<std::string> ReserveWorkersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `attempt`: the job's attempt when its workers were reserved (a plan made before a
  // re-queue is dropped).
  void StartRendezvousLocked(const std::string& job_id, int attempt, absl::StatusOr<Plan> plan)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ExpireRendezvousLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnOfferLocked(WorkerEntry& w, const v1::RendezvousOffer& offer)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string ChooseBackendLocked(const std::vector<WorkerEntry*>& ranks) const;
  std::string QueueReasonLocked(const ActiveJob& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // How many ranks the job runs on when it starts now.
  int WorldLocked(const ActiveJob& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // control.cc
  void ReaperLoop();
  // Reports every registered worker to the metrics (from the scheduler loop).
  void SampleWorkersLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnEventLocked(WorkerEntry& w, v1::JobEvent event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnResultLocked(WorkerEntry& w, const v1::WorkerResult& result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Re-queues the job (FailOrRetryLocked) or fails it with `reason`.
  void FailOrRetryLocked(const std::string& job_id, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fails or re-queues the jobs whose held failure is due.
  void ExpireHeldFailuresLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets the worker and fails or re-queues its job with "worker NAME <what>".
  void LoseWorkerLocked(const std::string& worker_id, const std::string& what)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The rank of `w` in its current job, or -1 (with `*job` unset) when it runs none.
  int RankLocked(const WorkerEntry& w, const std::string& job_id, ActiveJob** job)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // coordinator.cc
  // Queues the unfinished jobs of a store from an earlier run (the constructor).
  void RestoreLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves an active job to a terminal `state`: StateChange event, StopJob to every rank that
  // has not sent its result, workers without an Assignment released, runtime state dropped.
  void FinishLocked(const std::string& job_id, v1::JobState state, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves a PLANNING or RUNNING job back to QUEUED (front of the queue) after a lost worker:
  // its ranks are stopped, its partial output kept; the next run resumes from it over the
  // workers there are then.
  void RequeueLocked(const std::string& job_id, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // StopJob to every rank of `job` that has not sent its result; workers without an
  // Assignment are released.
  void StopRanksLocked(const std::string& job_id, const ActiveJob& job, const std::string& reason,
                       bool discard_output) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TransitionLocked(const std::string& job_id, v1::JobState to, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AppendLocked(const std::string& job_id, v1::JobEvent event)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Send(WorkerEntry& w, v1::ControlResponse msg);
  void WakeScheduler() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const CoordinatorOptions options_;
  std::unique_ptr<CoordinatorMetrics> own_metrics_;  // when none was given
  CoordinatorMetrics* const metrics_;
  const std::string tag_;  // InstanceTag(): in worker ids (job ids use store_.tag())
  std::mutex mu_;
  std::condition_variable scheduler_cv_;  // dirty_ or stopping_
  std::condition_variable events_cv_;     // an event was appended, or stopping_
  std::condition_variable reaper_cv_;     // stopping_
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;  // something the scheduler looks at changed
  JobStore store_ ABSL_GUARDED_BY(mu_);
  WorkerRegistry workers_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, ActiveJob> active_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);  // QUEUED job ids, oldest first
  std::thread scheduler_;
  std::thread reaper_;
};

// The message of the Unavailable status calls get once the coordinator is stopping: clients
// retry (a WatchJob resumes from its next index) against the restarted coordinator.
inline constexpr char kShuttingDown[] = "coordinator shutting down";

// How long a rank's communicator failure waits for the lost worker that may explain it.
inline constexpr absl::Duration kHoldRankFailure = absl::Seconds(2);

// "rank R (worker NAME): MESSAGE", the reason a job fails with when one of its ranks fails.
std::string RankFailure(int rank, const std::string& worker_name, const std::string& message);

}  // namespace dgptq::coordinator
