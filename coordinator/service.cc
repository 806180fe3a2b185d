#include "coordinator/service.h"

#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "coordinator/request_limits.h"

namespace dgptq::coordinator {
namespace {

// How long one WatchJob wait lasts before the handler checks its context again.
constexpr absl::Duration kWatchSlice = absl::Milliseconds(200);

}  // namespace

grpc::Status CoordinatorService::Done(const char* method, grpc::Status status) {
  metrics_->ApiRequest(method, static_cast<absl::StatusCode>(status.error_code()));
  return status;
}

grpc::Status CoordinatorService::Done(const char* method, const absl::Status& status) {
  return Done(method, ToGrpcStatus(status));
}

absl::Status CoordinatorService::Admit(const grpc::ServerContext& ctx, Role role,
                                       absl::Status limits) const {
  const auto& metadata = ctx.client_metadata();
  const auto it = metadata.find("authorization");
  std::optional<absl::string_view> authorization;
  if (it != metadata.end()) authorization = absl::string_view(it->second.data(), it->second.size());
  DGPTQ_RETURN_IF_ERROR(auth_.Check(role, authorization));
  return limits;
}

grpc::Status CoordinatorService::SubmitJob(grpc::ServerContext* ctx,
                                           const v1::SubmitJobRequest* req,
                                           v1::SubmitJobResponse* resp) {
  absl::Status admitted = Admit(*ctx, Role::kClient, CheckRequest(*req));
  if (!admitted.ok()) return Done("SubmitJob", admitted);
  absl::StatusOr<Coordinator::Submitted> s = core_->Submit(req->spec(), req->request_id());
  if (s.ok()) {
    *resp->mutable_job() = std::move(s->job);
    resp->set_created(s->created);
  }
  return Done("SubmitJob", s.status());
}

grpc::Status CoordinatorService::GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req,
                                        v1::Job* resp) {
  absl::Status admitted = Admit(*ctx, Role::kClient, CheckRequest(*req));
  if (!admitted.ok()) return Done("GetJob", admitted);
  absl::StatusOr<v1::Job> job = core_->GetJob(req->job_id());
  if (job.ok()) *resp = *std::move(job);
  return Done("GetJob", job.status());
}

grpc::Status CoordinatorService::ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req,
                                          v1::ListJobsResponse* resp) {
  absl::Status admitted = Admit(*ctx, Role::kClient, CheckRequest(*req));
  if (!admitted.ok()) return Done("ListJobs", admitted);
  absl::StatusOr<v1::ListJobsResponse> page = core_->ListJobs(*req);
  if (page.ok()) *resp = *std::move(page);
  return Done("ListJobs", page.status());
}

grpc::Status CoordinatorService::WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                                          grpc::ServerWriter<v1::JobEvent>* writer) {
  absl::Status admitted = Admit(*ctx, Role::kClient, CheckRequest(*req));
  if (!admitted.ok()) return Done("WatchJob", admitted);
  // The slot is taken before the check, so concurrent calls cannot all pass it.
  if (watchers_.fetch_add(1) >= max_watchers_) {
    watchers_.fetch_sub(1);
    return Done("WatchJob", absl::ResourceExhaustedError(
                                absl::StrCat("too many open WatchJob streams (--max-watchers ",
                                             max_watchers_, "); retry later")));
  }
  grpc::Status status = Watch(ctx, *req, writer);
  watchers_.fetch_sub(1);
  return Done("WatchJob", status);
}

grpc::Status CoordinatorService::Watch(grpc::ServerContext* ctx, const v1::WatchJobRequest& req,
                                       grpc::ServerWriter<v1::JobEvent>* writer) {
  int64_t next = req.from_index();
  while (!ctx->IsCancelled()) {
    absl::StatusOr<Coordinator::EventBatch> batch =
        core_->WaitEvents(req.job_id(), next, kWatchSlice);
    if (!batch.ok()) return ToGrpcStatus(batch.status());
    for (const v1::JobEvent& e : batch->events) {
      if (!writer->Write(e)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
      ++next;
    }
    if (batch->done) return grpc::Status::OK;
  }
  return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
}

grpc::Status CoordinatorService::CancelJob(grpc::ServerContext* ctx,
                                           const v1::CancelJobRequest* req,
                                           v1::CancelJobResponse* resp) {
  absl::Status admitted = Admit(*ctx, Role::kClient, CheckRequest(*req));
  if (!admitted.ok()) return Done("CancelJob", admitted);
  absl::StatusOr<v1::Job> job = core_->Cancel(req->job_id(), req->reason());
  if (job.ok()) *resp->mutable_job() = *std::move(job);
  return Done("CancelJob", job.status());
}

grpc::Status CoordinatorService::RegisterWorker(grpc::ServerContext* ctx,
                                                const v1::RegisterWorkerRequest* req,
                                                v1::RegisterWorkerResponse* resp) {
  absl::Status admitted = Admit(*ctx, Role::kWorker, CheckRequest(*req));
  if (!admitted.ok()) return Done("RegisterWorker", admitted);
  *resp = core_->Register(*req);
  return Done("RegisterWorker", grpc::Status::OK);
}

grpc::Status CoordinatorService::Heartbeat(grpc::ServerContext* ctx,
                                           const v1::HeartbeatRequest* req,
                                           v1::HeartbeatResponse* resp) {
  absl::Status admitted = Admit(*ctx, Role::kWorker, CheckRequest(*req));
  if (!admitted.ok()) return Done("Heartbeat", admitted);
  absl::StatusOr<v1::HeartbeatResponse> r = core_->Heartbeat(*req);
  if (r.ok()) *resp = *std::move(r);
  return Done("Heartbeat", r.status());
}

grpc::Status CoordinatorService::Control(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<v1::ControlResponse, v1::ControlRequest>* stream) {
  absl::Status admitted = Admit(*ctx, Role::kWorker, absl::OkStatus());
  if (!admitted.ok()) return Done("Control", admitted);
  return Done("Control", RunControl(ctx, stream));
}

grpc::Status CoordinatorService::RunControl(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<v1::ControlResponse, v1::ControlRequest>* stream) {
  v1::ControlRequest msg;
  if (!stream->Read(&msg)) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "control stream closed before its hello");
  }
  if (!msg.has_hello()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the first message on a control stream must be a hello");
  }
  const std::string worker_id = msg.hello().worker_id();
  absl::StatusOr<std::shared_ptr<ControlOutbox>> outbox = core_->Connect(worker_id);
  if (!outbox.ok()) return ToGrpcStatus(outbox.status());
  // The only writer of this stream. When the coordinator closes the outbox (lease lost,
  // shutdown) or a write fails, cancelling the call ends the Read loop below.
  std::atomic<bool> reader_done{false};
  std::thread writer([&, box = *outbox] {
    while (std::optional<v1::ControlResponse> out = box->Pop()) {
      if (!stream->Write(*out)) break;
    }
    if (!reader_done) ctx->TryCancel();
  });
  while (stream->Read(&msg)) core_->OnControl(worker_id, msg);
  reader_done = true;
  core_->Disconnect(worker_id, outbox->get());
  (*outbox)->Close();  // ends the writer if the worker is still registered
  writer.join();
  if (ctx->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "control stream ended");
  return grpc::Status::OK;
}

}  // namespace dgptq::coordinator
