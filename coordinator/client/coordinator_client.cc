#include "coordinator/client/coordinator_client.h"

#include <random>
#include <utility>

#include "absl/strings/str_format.h"
#include "common/grpc_options.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "grpcpp/grpcpp.h"

namespace dgptq::client {

absl::Status ClientOptions::Validate() const {
  if (address.empty()) return absl::InvalidArgumentError("coordinator address is empty");
  if (connect_timeout <= absl::ZeroDuration() || rpc_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeouts must be positive");
  }
  if (max_attempts < 1) return absl::InvalidArgumentError("max_attempts must be at least 1");
  return absl::OkStatus();
}

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

std::string NewRequestId() {
  std::random_device rd;
  uint8_t b[16];
  for (int i = 0; i < 16; i += 4) {
    const uint32_t r = rd();
    for (int j = 0; j < 4; ++j) b[i + j] = static_cast<uint8_t>(r >> (8 * j));
  }
  b[6] = (b[6] & 0x0f) | 0x40;  // version 4
  b[8] = (b[8] & 0x3f) | 0x80;  // variant 10xx (RFC 4122)
  return absl::StrFormat("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                         b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
                         b[12], b[13], b[14], b[15]);
}

CoordinatorClient::CoordinatorClient(ClientOptions options)
    : options_(std::move(options)),
      // Keepalive (a WatchJob of a queued job may carry nothing for hours), message size
      // limits, quick reconnects while a call waits for a (re)starting coordinator, TLS and the
      // token: common/grpc_options.h.
      channel_(MakeGrpcChannel(options_.address, options_.credentials)),
      stub_(v1::Coordinator::NewStub(channel_)) {}

absl::Status CoordinatorClient::WaitConnected() {
  if (channel_->WaitForConnected(absl::ToChronoTime(absl::Now() + options_.connect_timeout))) {
    return absl::OkStatus();
  }
  return absl::UnavailableError(absl::StrFormat("coordinator %s not reachable within %s",
                                                options_.address,
                                                absl::FormatDuration(options_.connect_timeout)));
}

absl::Status CoordinatorClient::CallWithRetry(
    const std::function<grpc::Status(grpc::ClientContext&)>& attempt) {
  absl::Duration backoff = options_.initial_backoff;
  absl::Status status;
  for (int i = 0; i < options_.max_attempts; ++i) {
    if (i > 0) {
      absl::SleepFor(backoff);
      backoff *= 2;
    }
    // The connect wait already spans gRPC's own reconnect attempts: no retry after it fails.
    DGPTQ_RETURN_IF_ERROR(WaitConnected());
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.rpc_timeout));
    status = FromGrpcStatus(attempt(ctx));
    if (!absl::IsUnavailable(status)) return status;
  }
  return status;
}

absl::StatusOr<v1::SubmitJobResponse> CoordinatorClient::SubmitJob(const v1::JobSpec& spec,
                                                                   const std::string& request_id) {
  v1::SubmitJobRequest request;
  *request.mutable_spec() = spec;
  request.set_request_id(request_id);
  v1::SubmitJobResponse response;
  DGPTQ_RETURN_IF_ERROR(CallWithRetry(
      [&](grpc::ClientContext& ctx) { return stub_->SubmitJob(&ctx, request, &response); }));
  return response;
}

absl::StatusOr<v1::Job> CoordinatorClient::GetJob(const std::string& job_id) {
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  v1::Job job;
  DGPTQ_RETURN_IF_ERROR(
      CallWithRetry([&](grpc::ClientContext& ctx) { return stub_->GetJob(&ctx, request, &job); }));
  return job;
}

absl::StatusOr<v1::ListJobsResponse> CoordinatorClient::ListJobs(
    const v1::ListJobsRequest& request) {
  v1::ListJobsResponse response;
  DGPTQ_RETURN_IF_ERROR(CallWithRetry(
      [&](grpc::ClientContext& ctx) { return stub_->ListJobs(&ctx, request, &response); }));
  return response;
}

absl::StatusOr<v1::ListJobsResponse> CoordinatorClient::ListAllJobs(v1::ListJobsRequest request) {
  v1::ListJobsResponse all;
  while (true) {
    DGPTQ_ASSIGN_OR_RETURN(v1::ListJobsResponse page, ListJobs(request));
    for (auto& job : *page.mutable_jobs()) *all.add_jobs() = std::move(job);
    if (page.next_page_token().empty()) return all;
    request.set_page_token(page.next_page_token());
  }
}

absl::StatusOr<v1::Job> CoordinatorClient::CancelJob(const std::string& job_id,
                                                     const std::string& reason) {
  v1::CancelJobRequest request;
  request.set_job_id(job_id);
  request.set_reason(reason);
  v1::CancelJobResponse response;
  DGPTQ_RETURN_IF_ERROR(CallWithRetry(
      [&](grpc::ClientContext& ctx) { return stub_->CancelJob(&ctx, request, &response); }));
  return response.job();
}

absl::StatusOr<v1::Job> CoordinatorClient::WatchJob(const std::string& job_id, int64_t from_index,
                                                    const EventCallback& on_event) {
  int64_t next = from_index;
  int failures = 0;
  absl::Duration backoff = options_.initial_backoff;
  while (true) {
    DGPTQ_RETURN_IF_ERROR(WaitConnected());
    grpc::ClientContext ctx;  // no deadline: the stream lasts as long as the job
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    request.set_from_index(next);
    std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader = stub_->WatchJob(&ctx, request);
    v1::JobEvent event;
    bool received = false;
    while (reader->Read(&event)) {
      if (event.index() < next) continue;  // a replay overlapping what was already delivered
      next = event.index() + 1;
      received = true;
      on_event(event);
    }
    absl::Status status = FromGrpcStatus(reader->Finish());
    if (status.ok()) {
      DGPTQ_ASSIGN_OR_RETURN(v1::Job job, GetJob(job_id));
      if (IsTerminal(job.state())) return job;
      status =
          absl::UnavailableError(absl::StrFormat("WatchJob stream of %s ended while the job is %s",
                                                 job_id, v1::JobState_Name(job.state())));
    }
    // This client never cancels the stream, so CANCELLED comes from the server's side (a server
    // shutting down cancels the calls still open): as safe to resume as UNAVAILABLE.
    if (absl::IsCancelled(status)) status = absl::UnavailableError(status.message());
    if (!absl::IsUnavailable(status)) return status;
    if (received) {
      failures = 0;
      backoff = options_.initial_backoff;
    }
    if (++failures >= options_.max_attempts) return status;
    absl::SleepFor(backoff);
    backoff *= 2;
  }
}

}  // namespace dgptq::client
