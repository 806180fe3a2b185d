// A client of the Coordinator service (proto/dgptq/v1/coordinator.proto) for `dgptq submit`,
// `watch`, `status`, `list` and `cancel`: a gRPC channel with a connect deadline, and calls that
// retry UNAVAILABLE with exponential backoff.
//
// Status codes returned are the server's, one to one (common/grpc_status.h), plus:
//   UNAVAILABLE        the coordinator could not be reached within `connect_timeout`, or every
//                      attempt of a call answered UNAVAILABLE;
//   DEADLINE_EXCEEDED  a unary call got no answer within `rpc_timeout`.
// Both mean "the coordinator is unreachable" to the CLI (exit code 4).
//
// Thread-safety: a CoordinatorClient may be used from one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/grpc_security.h"
#include "dgptq/v1/coordinator.grpc.pb.h"

namespace dgptq::client {

struct ClientOptions {
  // host:port of the coordinator.
  std::string address = "localhost:50051";
  // How long a call waits for the channel to connect before failing with UNAVAILABLE. gRPC
  // keeps reconnecting (every 200 ms to 2 s) within this window, so it is also the window in
  // which a restarting coordinator is waited for.
  absl::Duration connect_timeout = absl::Seconds(5);
  // Deadline of each unary call attempt (not of WatchJob, whose stream lasts as long as the job).
  absl::Duration rpc_timeout = absl::Seconds(30);
  // Attempts per call while the server answers UNAVAILABLE (WatchJob: consecutive broken
  // streams with no event in between).
  int max_attempts = 4;
  // Sleep before the first retry; doubled before each further one.
  absl::Duration initial_backoff = absl::Milliseconds(250);
  // TLS and bearer token (common/grpc_security.h: LoadChannelCredentials); default plaintext
  // without a token.
  GrpcChannelCredentials credentials;

  // InvalidArgument for an empty address, non-positive timeouts or attempts < 1.
  absl::Status Validate() const;
};

// True for SUCCEEDED, FAILED and CANCELLED.
bool IsTerminal(v1::JobState state);

// A random RFC 4122 version-4 UUID ("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx", lower case), used as
// SubmitJobRequest.request_id so that a retried submission never creates a second job.
std::string NewRequestId();

class CoordinatorClient {
 public:
  // Creates the channel; no I/O happens until the first call. `options` must be valid.
  explicit CoordinatorClient(ClientOptions options);

  // SubmitJob with `request_id` (sent unchanged on every retry).
  absl::StatusOr<v1::SubmitJobResponse> SubmitJob(const v1::JobSpec& spec,
                                                  const std::string& request_id);
  absl::StatusOr<v1::Job> GetJob(const std::string& job_id);
  // One page.
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest& request);
  // Every page from `request.page_token` on, concatenated; next_page_token is empty.
  absl::StatusOr<v1::ListJobsResponse> ListAllJobs(v1::ListJobsRequest request);
  // The job after the request (CANCELLED, or its earlier terminal state).
  absl::StatusOr<v1::Job> CancelJob(const std::string& job_id, const std::string& reason);

  using EventCallback = std::function<void(const v1::JobEvent&)>;
  // Streams the job's events from `from_index` to `on_event`, each index once and in order, until
  // the job is terminal; returns the final Job. A stream that breaks with UNAVAILABLE or
  // CANCELLED (a server shutting down), or ends while the job is not terminal, is reopened from
  // the index after the last event received; `max_attempts` consecutive failures end it with
  // UNAVAILABLE. NOT_FOUND / OUT_OF_RANGE are the server's.
  absl::StatusOr<v1::Job> WatchJob(const std::string& job_id, int64_t from_index,
                                   const EventCallback& on_event);

 private:
  // UNAVAILABLE naming the address when the channel does not connect within connect_timeout.
  absl::Status WaitConnected();
  // Runs `attempt` (one RPC on a fresh context with the rpc_timeout deadline) until it returns
  // something other than UNAVAILABLE or max_attempts are used.
  absl::Status CallWithRetry(const std::function<grpc::Status(grpc::ClientContext&)>& attempt);

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

}  // namespace dgptq::client
