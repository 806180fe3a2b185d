#include "coordinator/request_limits.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "proto/job_spec.h"

namespace dgptq::coordinator {

absl::Status CheckRequest(const v1::SubmitJobRequest& req) {
  return CheckStringField("SubmitJobRequest.request_id", req.request_id(), kMaxIdBytes);
}

absl::Status CheckRequest(const v1::GetJobRequest& req) {
  return CheckStringField("GetJobRequest.job_id", req.job_id(), kMaxIdBytes);
}

absl::Status CheckRequest(const v1::ListJobsRequest& req) {
  if (req.states_size() > kMaxStateFilters) {
    return absl::InvalidArgumentError(absl::StrCat("ListJobsRequest.states has ", req.states_size(),
                                                   " entries; at most ", kMaxStateFilters,
                                                   " allowed"));
  }
  return CheckStringField("ListJobsRequest.page_token", req.page_token(), kMaxIdBytes);
}

absl::Status CheckRequest(const v1::WatchJobRequest& req) {
  return CheckStringField("WatchJobRequest.job_id", req.job_id(), kMaxIdBytes);
}

absl::Status CheckRequest(const v1::CancelJobRequest& req) {
  DGPTQ_RETURN_IF_ERROR(CheckStringField("CancelJobRequest.job_id", req.job_id(), kMaxIdBytes));
  return CheckStringField("CancelJobRequest.reason", req.reason(), kMaxReasonBytes);
}

absl::Status CheckRequest(const v1::RegisterWorkerRequest& req) {
  const v1::WorkerCapabilities& c = req.capabilities();
  DGPTQ_RETURN_IF_ERROR(CheckStringField("RegisterWorkerRequest.name", req.name(), kMaxLabelBytes));
  DGPTQ_RETURN_IF_ERROR(
      CheckStringField("RegisterWorkerRequest.capabilities.host", c.host(), kMaxLabelBytes));
  DGPTQ_RETURN_IF_ERROR(CheckStringField("RegisterWorkerRequest.capabilities.gpu_name",
                                         c.gpu_name(), kMaxLabelBytes));
  return CheckStringField("RegisterWorkerRequest.capabilities.version", c.version(),
                          kMaxLabelBytes);
}

absl::Status CheckRequest(const v1::HeartbeatRequest& req) {
  DGPTQ_RETURN_IF_ERROR(
      CheckStringField("HeartbeatRequest.worker_id", req.worker_id(), kMaxIdBytes));
  return CheckStringField("HeartbeatRequest.job_id", req.job_id(), kMaxIdBytes);
}

}  // namespace dgptq::coordinator
