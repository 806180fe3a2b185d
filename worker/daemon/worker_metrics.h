// The worker daemon's Prometheus metrics, served on their own port (/metrics). Names
// follow the Prometheus rules: base units, _total counters, _seconds, _bytes; labels only
// of bounded sets (phase, backend, result) — never job or request ids.
//
//   dgptq_build_info{component,version}                 1
//   dgptq_worker_busy                                   1 while a rank of a job runs
//   dgptq_worker_jobs_total{result}                     ranks finished: ok, failed, cancelled
//   dgptq_worker_layers_done_total                      decoder layers finished by this worker
//   dgptq_worker_modules_quantized_total                modules this worker ran GPTQ/RTN on
//   dgptq_worker_phase_seconds_total{phase}             wall time per pipeline phase
//   dgptq_worker_communicated_bytes_total{backend,phase} bytes sent + received (reduce, broadcast)
//   dgptq_worker_gptq_loss                              histogram of per-module GPTQ loss
//   dgptq_worker_calibration_tokens_total               calibration tokens forwarded
//   dgptq_worker_device_memory_peak_bytes               peak device memory of the current/last job
//   dgptq_worker_host_resident_memory_bytes             resident set size now
//   dgptq_worker_host_resident_memory_peak_bytes        peak resident set size (VmHWM)
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/quant/pipeline.h"

namespace dgptq::worker {

class WorkerMetrics {
 public:
  // Serves /metrics on `address` ("host:port"; port 0 picks a free one).
  static absl::StatusOr<std::unique_ptr<WorkerMetrics>> Start(const std::string& address,
                                                              const std::string& version);
  virtual ~WorkerMetrics() = default;
  virtual int port() const = 0;

  virtual void JobStarted() = 0;
  // `result`: "ok", "failed" or "cancelled".
  virtual void JobEnded(const std::string& result) = 0;
  virtual void Progress(const ProgressEvent& e, const std::string& comm_backend) = 0;
  // Refreshes the memory gauges (called at each scrape-sized interval and event).
  virtual void SampleMemory() = 0;
};

}  // namespace dgptq::worker
