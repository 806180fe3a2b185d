// dgptq.v1.Coordinator over the sync gRPC API: each handler converts the request, calls the
// Coordinator core and converts its status (common/grpc_status.h).
//
// Streams: WatchJob polls the core's event wait in short slices so that a cancelled client or
// a server shutdown ends it promptly. Control reads on the handler thread and writes from a
// second thread that drains the worker's ControlOutbox, so writes never interleave; when
// the coordinator closes the outbox (lost lease, shutdown) the call is cancelled. Once the
// core stops, WatchJob ends with UNAVAILABLE "coordinator shutting down" (clients resume).
// Every handler counts its call and code in dgptq_coordinator_api_requests_total.
//
// Admission (issue 6), before the core sees a call: the caller's bearer token for the method's
// role (auth.h: UNAUTHENTICATED, PERMISSION_DENIED), then the request's field limits
// (request_limits.h: INVALID_ARGUMENT); WatchJob streams beyond max_watchers get
// RESOURCE_EXHAUSTED.
#pragma once

#include <atomic>

#include "coordinator/auth.h"
#include "coordinator/coordinator.h"
#include "coordinator/metrics.h"
#include "dgptq/v1/coordinator.grpc.pb.h"

namespace dgptq::coordinator {

class CoordinatorService final : public v1::Coordinator::Service {
 public:
  // `core` and `metrics` must outlive the service. At most `max_watchers` WatchJob streams are
  // open at once.
  CoordinatorService(Coordinator* core, CoordinatorMetrics* metrics, TokenAuth auth,
                     int max_watchers)
      : core_(core), metrics_(metrics), auth_(std::move(auth)), max_watchers_(max_watchers) {}

  grpc::Status SubmitJob(grpc::ServerContext* ctx, const v1::SubmitJobRequest* req,
                         v1::SubmitJobResponse* resp) override;
  grpc::Status GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req,
                      v1::Job* resp) override;
  grpc::Status ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req,
                        v1::ListJobsResponse* resp) override;
  grpc::Status WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                        grpc::ServerWriter<v1::JobEvent>* writer) override;
  grpc::Status CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req,
                         v1::CancelJobResponse* resp) override;
  grpc::Status RegisterWorker(grpc::ServerContext* ctx, const v1::RegisterWorkerRequest* req,
                              v1::RegisterWorkerResponse* resp) override;
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* resp) override;
  grpc::Status Control(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<v1::ControlResponse, v1::ControlRequest>* stream) override;

 private:
  // Counts the call and returns `status`.
  grpc::Status Done(const char* method, grpc::Status status);
  grpc::Status Done(const char* method, const absl::Status& status);
  // The caller's token for `role`, then `limits` (the request's CheckRequest).
  absl::Status Admit(const grpc::ServerContext& ctx, Role role, absl::Status limits) const;
  grpc::Status Watch(grpc::ServerContext* ctx, const v1::WatchJobRequest& req,
                     grpc::ServerWriter<v1::JobEvent>* writer);
  grpc::Status RunControl(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<v1::ControlResponse, v1::ControlRequest>* stream);

  Coordinator* core_;
  CoordinatorMetrics* metrics_;
  const TokenAuth auth_;
  const int max_watchers_;
  std::atomic<int> watchers_{0};  // open WatchJob streams
};

}  // namespace dgptq::coordinator
