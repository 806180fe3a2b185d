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

namespace {

// The role tokens of `options` (coordinator/auth.h), read from their files.
absl::StatusOr<TokenAuth> LoadTokenAuth(const CoordinatorOptions& options) {
  std::string tokens[2];
  const std::string* files[2] = {&options.client_token_file, &options.worker_token_file};
  for (int i = 0; i < 2; ++i) {
    if (!files[i]->empty()) {
      DGPTQ_ASSIGN_OR_RETURN(tokens[i], ReadBearerTokenFile(*files[i]));
    }
  }
  if (!tokens[0].empty() && tokens[0] == tokens[1]) {
    return absl::InvalidArgumentError(
        "--client-token-file and --worker-token-file hold the same token: give each role its own");
  }
  if ((!tokens[0].empty() || !tokens[1].empty()) && !options.tls.enabled()) {
    spdlog::warn(
        "bearer tokens without --tls-cert travel in plaintext: use TLS outside a "
        "trusted network");
  }
  return TokenAuth(std::move(tokens[0]), std::move(tokens[1]));
}

}  // namespace

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    CoordinatorOptions options) {
  DGPTQ_RETURN_IF_ERROR(options.Validate());
  DGPTQ_ASSIGN_OR_RETURN(TokenAuth auth, LoadTokenAuth(options));
  const std::string listen = options.listen;
  const GrpcServerTls tls = options.tls;
  const int max_watchers = options.max_watchers, max_request_bytes = options.max_request_bytes;
  std::unique_ptr<CoordinatorServer> s(new CoordinatorServer());
  s->metrics_ = CoordinatorMetrics::Create(DGPTQ_VERSION);
  if (!options.metrics_listen.empty()) {
    DGPTQ_RETURN_IF_ERROR(s->metrics_->Serve(options.metrics_listen));
  }
  JobStore store;
  if (!options.state_dir.empty()) {
    DGPTQ_ASSIGN_OR_RETURN(store, JobStore::Open(options.state_dir));
  }
  s->core_ = std::make_unique<Coordinator>(std::move(options), s->metrics_.get(), std::move(store));
  s->service_ = std::make_unique<CoordinatorService>(s->core_.get(), s->metrics_.get(),
                                                     std::move(auth), max_watchers);
  DGPTQ_ASSIGN_OR_RETURN(
      s->server_,
      StartGrpcServer(listen, {{v1::Coordinator::service_full_name(), s->service_.get()}},
                      &s->port_, tls, max_request_bytes));
  s->core_->Start();
  spdlog::info("dgptq-coordinator listening on {} (port {}, {}), metrics on port {}", listen,
               s->port_,
               tls.enabled() ? (tls.client_ca_file.empty() ? "TLS" : "mutual TLS") : "plaintext",
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
