// Size limits of the strings a Coordinator request may carry (issue 6), checked by the service
// before the core sees the request: everything a request names is kept (job specs, reasons,
// worker names in logs and metrics labels) for the coordinator's lifetime. Over a limit:
// InvalidArgument naming the field and the limit. Paths inside a JobSpec are ResolveJobSpec's
// (proto/job_spec.h, kMaxPathBytes). The message as a whole is bounded before any of this by
// --max-request-bytes (RESOURCE_EXHAUSTED from gRPC).
#pragma once

#include <cstddef>

#include "absl/status/status.h"
#include "dgptq/v1/coordinator.pb.h"

namespace dgptq::coordinator {

inline constexpr size_t kMaxIdBytes = 256;       // request_id, job_id, worker_id, page_token
inline constexpr size_t kMaxReasonBytes = 1024;  // CancelJobRequest.reason
inline constexpr size_t kMaxLabelBytes = 256;    // a worker's name, host, GPU name and version
inline constexpr int kMaxStateFilters = 16;      // ListJobsRequest.states entries

absl::Status CheckRequest(const v1::SubmitJobRequest& req);
absl::Status CheckRequest(const v1::GetJobRequest& req);
absl::Status CheckRequest(const v1::ListJobsRequest& req);
absl::Status CheckRequest(const v1::WatchJobRequest& req);
absl::Status CheckRequest(const v1::CancelJobRequest& req);
absl::Status CheckRequest(const v1::RegisterWorkerRequest& req);
absl::Status CheckRequest(const v1::HeartbeatRequest& req);

}  // namespace dgptq::coordinator
