// Settings of the coordinator daemon, read from flags in main.cc only and passed down.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

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

  // InvalidArgument naming the bad setting: a metrics port file without metrics,
  // non-positive durations, heartbeat_interval not
  // below lease_ttl, max_queued_jobs < 1, an unknown comm_backend, an allowed root that is
  // not an existing directory.
  absl::Status Validate() const;
};

}  // namespace dgptq::coordinator
