#include "worker/comm/nccl_check.h"

#include "absl/strings/str_format.h"

namespace dgptq::worker {

absl::Status ToStatus(ncclResult_t e, const char* expr, const char* file, int line) {
  if (e == ncclSuccess) return absl::OkStatus();
  const char* last = ncclGetLastError(nullptr);
  const std::string msg =
      absl::StrFormat("NCCL error %s in %s at %s:%d%s%s", ncclGetErrorString(e), expr, file, line,
                      (last && *last) ? ": " : "", last ? last : "");
  switch (e) {
    case ncclRemoteError:
    case ncclSystemError:
      return absl::UnavailableError(msg);
    default:
      return absl::InternalError(msg);
  }
}

}  // namespace dgptq::worker
