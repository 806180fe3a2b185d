// The worker daemon (`dgptq-worker`): registers with the coordinator, keeps its lease
// with heartbeats, and on its control stream answers rendezvous requests and runs its
// rank of each assigned job with the same pipeline `dgptq quantize` runs
// (QuantizeRank), reporting progress, module losses and a final WorkerResult.
//
// Protocol (proto/dgptq/v1/worker.proto):
// - RegisterWorker, then Control: hello first; a CreateRendezvous is answered with a
//   RendezvousOffer (host: a listener bound on --host, port picked by the kernel, kept for
//   the job's Assignment; nccl: a fresh ncclUniqueId); an Assignment starts the rank on
//   a job thread; StopJob makes it stop at the next phase boundary.
// - Progress events: every phase of every layer (load, forward, reduce, quantize,
//   broadcast, write) with its seconds and communicator bytes; a ModuleLoss per module
//   this rank quantized; and, when a layer is finished on this rank, Progress{phase WRITE,
//   done 1, total 1} for that layer (the coordinator's layers_done counts these).
// - One job at a time: an Assignment while busy is answered with a WorkerResult of
//   FAILED_PRECONDITION for the new job.
// - When the coordinator is unreachable, or forgets the worker (Heartbeat NOT_FOUND), the
//   daemon stops its job and registers again, retrying with a bounded backoff.
//
// Serving: its own gRPC port (--listen) carries the Worker service (GetStatus), the
// standard grpc.health.v1 health service (NOT_SERVING once draining) and server
// reflection; /metrics is on --metrics-listen (worker_metrics.h lists the series). The
// server and the channel to the coordinator use the shared keepalive and message size
// settings of common/grpc_options.h; the channel uses TLS and a bearer token when configured
// (the worker's own port stays plaintext: it serves status and health only).
// - A coordinator that refuses the worker's token (UNAUTHENTICATED, PERMISSION_DENIED) is
//   retried like an unreachable one: the error is logged on every attempt.
//
// Thread-safety: Run() on one thread; Shutdown() from any thread.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/grpc_security.h"
#include "kernels/backend.h"

namespace dgptq::worker {

struct WorkerDaemonOptions {
  std::string coordinator = "localhost:50051";  // host:port
  std::string name;                             // default: hostname:pid
  kernels::DeviceKind device = kernels::DeviceKind::kCpu;
  int gpu = 0;          // CUDA device ordinal
  int cpu_threads = 0;  // CPU backend threads (0: all cores)
  // Address other ranks reach this worker at (its host-transport listener binds here).
  std::string host = "127.0.0.1";
  absl::Duration comm_timeout = absl::Seconds(300);  // per collective
  absl::Duration max_backoff = absl::Seconds(10);    // between reconnection attempts
  std::string listen = "0.0.0.0:50061";          // gRPC: Worker, health, reflection; "" none
  std::string metrics_listen = "0.0.0.0:9091";   // Prometheus /metrics; "" none
  std::string port_file;          // if set, the bound gRPC port is written here
  std::string metrics_port_file;  // if set, the bound metrics port is written here
  // TLS to the coordinator (mutual with a client certificate) and the file holding the worker
  // bearer token; defaults: plaintext, no token (common/grpc_security.h).
  GrpcChannelTls coordinator_tls;
  std::string token_file;
};

class WorkerDaemon {
 public:
  explicit WorkerDaemon(WorkerDaemonOptions options);
  ~WorkerDaemon();
  WorkerDaemon(const WorkerDaemon&) = delete;
  WorkerDaemon& operator=(const WorkerDaemon&) = delete;

  // Serves until Shutdown(); returns OK then. InvalidArgument for bad options (an unreadable or
  // mismatched TLS or token file included, naming it), FailedPrecondition when the device is
  // unusable (e.g. --device cuda without a GPU).
  absl::Status Run();
  // Stops the running job (it reports CANCELLED), closes the stream and makes Run return.
  void Shutdown();

  struct Impl;  // the daemon's state (worker_daemon.cc)

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace dgptq::worker
