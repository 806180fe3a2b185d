// The coordinator's Prometheus metrics (issue 5), served on their own port (/metrics,
// common/metrics_http.h). Names follow the Prometheus rules: base units, _total counters,
// _seconds; labels only of bounded sets — never job or request ids.
//
//   dgptq_build_info{component="coordinator",version}       1
//   dgptq_coordinator_jobs{state}                           jobs in each state (all six present)
//   dgptq_coordinator_jobs_finished_total{result}           succeeded, failed, cancelled
//   dgptq_coordinator_queue_depth                           QUEUED jobs
//   dgptq_coordinator_job_duration_seconds                  histogram, submission -> terminal
//   dgptq_coordinator_phase_duration_seconds{phase}         histogram: plan (coordinator), load,
//                                                           forward, reduce, quantize, broadcast,
//                                                           write (per rank and layer, from
//                                                           Progress.elapsed)
//   dgptq_coordinator_workers{state}                        registered workers, idle or busy
//   dgptq_coordinator_workers_registered                    registered workers
//   dgptq_coordinator_worker_heartbeat_age_seconds{worker}  since the lease was last renewed, by
//                                                           worker name; gone with the worker
//   dgptq_coordinator_api_requests_total{method,code}       Coordinator RPCs by gRPC code name
//
// The core reports through the methods below; they know no gRPC and no prometheus-cpp.
// Thread-safety: every method may be called from any thread.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "dgptq/v1/job.pb.h"

namespace dgptq::coordinator {

// One registered worker, as the coordinator sees it.
struct WorkerSample {
  std::string name;
  bool busy = false;             // reserved for or running a job
  absl::Duration heartbeat_age;  // since its lease was last renewed
};

class CoordinatorMetrics {
 public:
  // The metrics, not yet served (tests of the core use them unserved).
  static std::unique_ptr<CoordinatorMetrics> Create(const std::string& version);
  virtual ~CoordinatorMetrics() = default;

  // Serves /metrics on `address` ("host:port"; port 0 picks one) until destroyed.
  // Unavailable when it cannot bind; FailedPrecondition when already serving.
  virtual absl::Status Serve(const std::string& address) = 0;
  // The bound port; 0 when not serving.
  virtual int port() const = 0;

  // A job moved `from` -> `to` (from UNSPECIFIED: submitted); `age` is the time since its
  // submission (the job duration when `to` is terminal).
  virtual void JobTransition(v1::JobState from, v1::JobState to, absl::Duration age) = 0;
  // The coordinator planned a job's checkpoint in `elapsed`.
  virtual void Planned(absl::Duration elapsed) = 0;
  // A rank reported a phase of a layer that took `elapsed`; PHASE_UNSPECIFIED is ignored.
  virtual void RankPhase(v1::Phase phase, absl::Duration elapsed) = 0;
  // Every registered worker, now (the scheduler loop calls this on every pass: on each
  // change and at least once a second). Workers absent from `workers` lose their heartbeat
  // series.
  virtual void Workers(const std::vector<WorkerSample>& workers) = 0;
  // A Coordinator RPC ended with `code` (absl and gRPC codes share names and numbers).
  virtual void ApiRequest(std::string_view method, absl::StatusCode code) = 0;
};

}  // namespace dgptq::coordinator
