// The coordinator daemon's servers: the Coordinator core and its service, the standard health
// service and reflection on one gRPC port (common/grpc_options.h), and /metrics on another
// (metrics.h). main.cc and the tests run it the same way.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/coordinator.h"
#include "coordinator/metrics.h"
#include "coordinator/options.h"

namespace grpc {
class Server;
}

namespace dgptq::coordinator {

class CoordinatorService;

class CoordinatorServer {
 public:
  // Validates `options`, serves /metrics on options.metrics_listen (unless empty), starts the
  // core's threads (on the job store of options.state_dir, if any) and listens on
  // options.listen. InvalidArgument for bad options, Unavailable when an address cannot be
  // bound, JobStore::Open's codes when the state directory cannot be used.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(CoordinatorOptions options);
  ~CoordinatorServer();  // Shutdown(absl::ZeroDuration())

  // The bound gRPC port (the chosen one when options.listen asked for port 0).
  int port() const { return port_; }
  // The bound /metrics port; 0 when metrics are not served.
  int metrics_port() const { return metrics_->port(); }
  Coordinator& core() { return *core_; }

  // Graceful stop: health turns NOT_SERVING, the core stops (open WatchJob streams end with
  // UNAVAILABLE "coordinator shutting down", control streams end), other calls get up to
  // `grace` to finish, then what is left is cancelled. /metrics stays up until destruction.
  // Idempotent.
  void Shutdown(absl::Duration grace);

 private:
  CoordinatorServer() = default;

  std::unique_ptr<CoordinatorMetrics> metrics_;  // first: outlives the core and the service
  std::unique_ptr<Coordinator> core_;
  std::unique_ptr<CoordinatorService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace dgptq::coordinator
