// Bearer-token roles of the Coordinator service (issue 6): clients (SubmitJob, GetJob, ListJobs,
// WatchJob, CancelJob) and workers (RegisterWorker, Heartbeat, Control) each have a token of
// their own, read from files (--client-token-file, --worker-token-file). Health and reflection
// are separate services and stay open. Free of gRPC: the service passes the value of the
// call's "authorization" metadata.
#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dgptq::coordinator {

enum class Role { kClient, kWorker };

class TokenAuth {
 public:
  // An empty token: that role needs none. The two tokens must differ when both are set
  // (CoordinatorOptions::Validate checks the files).
  TokenAuth(std::string client_token, std::string worker_token)
      : client_token_(std::move(client_token)), worker_token_(std::move(worker_token)) {}

  // `authorization` is the call's "authorization" metadata, nullopt when absent. OK when `role`
  // needs no token or it is "Bearer <the role's token>"; PermissionDenied when it carries the
  // other role's token; Unauthenticated otherwise (missing, malformed or wrong). Tokens are
  // compared in time that does not depend on their contents.
  absl::Status Check(Role role, std::optional<absl::string_view> authorization) const;

 private:
  const std::string client_token_;
  const std::string worker_token_;
};

}  // namespace dgptq::coordinator
