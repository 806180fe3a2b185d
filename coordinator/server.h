// The coordinator daemon's gRPC server: the Coordinator core, its service, the standard
// health service and reflection, on one port. main.cc and the tests run it the same way.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/coordinator.h"
#include "coordinator/options.h"

namespace grpc {
class Server;
}

namespace dgptq::coordinator {

class CoordinatorService;

class CoordinatorServer {
 public:
  // Validates `options`, starts the core's threads and listens on options.listen.
  // InvalidArgument for bad options, Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(CoordinatorOptions options);
  ~CoordinatorServer();  // Shutdown(absl::ZeroDuration())

  // The bound port (the chosen one when options.listen asked for port 0).
  int port() const { return port_; }
  Coordinator& core() { return *core_; }

  // Ends the control streams and watches, lets other calls finish for up to `grace`, then
  // cancels what is left and stops the core. Idempotent.
  void Shutdown(absl::Duration grace);

 private:
  CoordinatorServer() = default;

  std::unique_ptr<Coordinator> core_;
  std::unique_ptr<CoordinatorService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace dgptq::coordinator
