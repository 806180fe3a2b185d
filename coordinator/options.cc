#include "coordinator/options.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/grpc_options.h"

namespace dgptq::coordinator {

absl::Status CoordinatorOptions::Validate() const {
  if (listen.empty()) return absl::InvalidArgumentError("--listen must not be empty");
  if (metrics_listen.empty() && !metrics_port_file.empty()) {
    return absl::InvalidArgumentError("--metrics-port-file needs a non-empty --metrics-listen");
  }
  const std::pair<const char*, absl::Duration> durations[] = {
      {"--lease-ttl", lease_ttl},
      {"--heartbeat-interval", heartbeat_interval},
      {"--rendezvous-timeout", rendezvous_timeout}};
  for (const auto& [flag, d] : durations) {
    if (d <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, " must be positive, got ", absl::FormatDuration(d)));
    }
  }
  if (heartbeat_interval >= lease_ttl) {
    return absl::InvalidArgumentError(
        absl::StrCat("--heartbeat-interval (", absl::FormatDuration(heartbeat_interval),
                     ") must be below --lease-ttl (", absl::FormatDuration(lease_ttl), ")"));
  }
  if (max_queued_jobs < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-queued-jobs must be at least 1, got ", max_queued_jobs));
  }
  if (comm_backend != "auto" && comm_backend != "host" && comm_backend != "nccl") {
    return absl::InvalidArgumentError(
        absl::StrCat("--comm-backend must be auto, host or nccl, got '", comm_backend, "'"));
  }
  if (absl::Status s = tls.Validate(); !s.ok()) return s;
  if (!client_token_file.empty() && client_token_file == worker_token_file) {
    return absl::InvalidArgumentError(
        "--client-token-file and --worker-token-file must differ: the roles need their own tokens");
  }
  if (max_job_retries < 0 || max_job_retries > 100) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-job-retries must be in [0, 100], got ", max_job_retries));
  }
  if (max_watchers < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-watchers must be at least 1, got ", max_watchers));
  }
  if (max_request_bytes < (64 << 10) || max_request_bytes > kGrpcMaxMessageBytes) {
    return absl::InvalidArgumentError(absl::StrCat("--max-request-bytes must be in [65536, ",
                                                   kGrpcMaxMessageBytes, "], got ",
                                                   max_request_bytes));
  }
  for (const std::string& root : allowed_roots) {
    std::error_code ec;
    if (!std::filesystem::is_directory(root, ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--allowed-root '", root, "' is not an existing directory"));
    }
  }
  return absl::OkStatus();
}

}  // namespace dgptq::coordinator
