#include "coordinator/options.h"

#include <filesystem>

#include "absl/strings/str_cat.h"

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
