#include "coordinator/server.h"

#include <chrono>

#include "common/grpc_options.h"
#include "common/status_macros.h"
#include "coordinator/service.h"
#include "grpcpp/grpcpp.h"
#include "spdlog/spdlog.h"

#ifndef DGPTQ_VERSION
#define DGPTQ_VERSION "0.0.0"
#endif

namespace dgptq::coordinator {

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    CoordinatorOptions options) {
  DGPTQ_RETURN_IF_ERROR(options.Validate());
  const std::string listen = options.listen;
  std::unique_ptr<CoordinatorServer> s(new CoordinatorServer());
  s->metrics_ = CoordinatorMetrics::Create(DGPTQ_VERSION);
  if (!options.metrics_listen.empty()) {
    DGPTQ_RETURN_IF_ERROR(s->metrics_->Serve(options.metrics_listen));
  }
  s->core_ = std::make_unique<Coordinator>(std::move(options), s->metrics_.get());
  s->service_ = std::make_unique<CoordinatorService>(s->core_.get(), s->metrics_.get());
  DGPTQ_ASSIGN_OR_RETURN(
      s->server_,
      StartGrpcServer(listen, {{v1::Coordinator::service_full_name(), s->service_.get()}},
                      &s->port_));
  s->core_->Start();
  spdlog::info("dgptq-coordinator listening on {} (port {}), metrics on port {}", listen, s->port_,
               s->metrics_port());
  return s;
}

CoordinatorServer::~CoordinatorServer() { Shutdown(absl::ZeroDuration()); }

void CoordinatorServer::Shutdown(absl::Duration grace) {
  if (server_ == nullptr) return;
  // Probes and load balancers see NOT_SERVING first; then the core, so that control streams
  // and watches end at once (watches with UNAVAILABLE) instead of holding the server's
  // shutdown until the deadline, when they would end CANCELLED.
  SetGrpcServing(*server_, false);
  core_->Stop();
  server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(grace));
  server_->Wait();
  server_.reset();
}

}  // namespace dgptq::coordinator
