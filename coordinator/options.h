// Settings of the coordinator daemon, read from flags in main.cc only and passed down.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/grpc_security.h"

namespace dgptq::coordinator {

struct CoordinatorOptions {
  // gRPC address to listen on; port 0 picks a free one (CoordinatorServer::port()).
  std::string listen = "0.0.0.0:50051";
  // Where main.cc writes the bound port once the server runs; empty for none.
  std::string port_file;
  // Prometheus /metrics address ("host:port", port 0 picks one); empty: not served. Empty
  // here for in-process servers (tests); main.cc's --metrics-listen defaults to 0.0.0.0:9090.
  std::string metrics_listen;
  // Where main.cc writes the bound metrics port; empty for none.
  std::string metrics_port_file;
  // A worker that sends no heartbeat for this long is lost; its job fails.
  absl::Duration lease_ttl = absl::Seconds(15);
  // How often workers are told to heartbeat (must be below lease_ttl).
  absl::Duration heartbeat_interval = absl::Seconds(3);
  // How long rank 0 may take to answer CreateRendezvous before the job fails.
  absl::Duration rendezvous_timeout = absl::Seconds(60);
  // QUEUED jobs beyond this are refused with RESOURCE_EXHAUSTED.
  int max_queued_jobs = 1000;
  // "auto", "host" or "nccl". auto: "nccl" iff every rank is a CUDA worker on a distinct
  // host (or the job has one CUDA rank), otherwise "host".
  std::string comm_backend = "auto";
  // When non-empty, every path of a job must lie inside one of these directories (after
  // resolving symlinks and "..").
  std::vector<std::string> allowed_roots;
  // Directory of the durable job store (DIR/jobs.db, coordinator/job_db.h): jobs and their
  // events survive a restart. Empty: jobs are kept in memory only (in-process tests).
  std::string state_dir;
  // TLS of the gRPC port (common/grpc_security.h): certificate and key, plus a client CA for
  // mutual TLS. Default: plaintext.
  GrpcServerTls tls;
  // Files holding the bearer tokens of the two roles (coordinator/auth.h), read at start;
  // empty: that role's methods need no token.
  std::string client_token_file;
  std::string worker_token_file;
  // Times a job whose worker was lost (or whose communicator failed) is re-queued to go on
  // over the workers there are, from the layers its partial output holds; beyond, it fails.
  int max_job_retries = 3;
  // Concurrent WatchJob streams; more are refused with RESOURCE_EXHAUSTED.
  int max_watchers = 256;
  // Largest request message accepted, in bytes; larger ones fail with RESOURCE_EXHAUSTED.
  int max_request_bytes = 4 << 20;

  // InvalidArgument naming the bad setting: a metrics port file without metrics,
  // non-positive durations, heartbeat_interval not
  // below lease_ttl, max_queued_jobs < 1, an unknown comm_backend, an allowed root that is
  // not an existing directory, incomplete TLS flags (GrpcServerTls::Validate), the same file
  // for both tokens, max_watchers < 1, max_request_bytes outside [64 KiB, 64 MiB]. The files
  // themselves are read by CoordinatorServer::Start.
  absl::Status Validate() const;
};

}  // namespace dgptq::coordinator
