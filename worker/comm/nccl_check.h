// NCCL results as absl::Status, following kernels/cuda/check.h: the failing expression,
// file:line, ncclGetErrorString and NCCL's last error message. Remote and system errors
// (a peer or the network failed) map to Unavailable, out of memory to ResourceExhausted,
// everything else to Internal. ncclInProgress is not success here: callers using
// non-blocking communicators handle it before checking.
#pragma once

#include <nccl.h>

#include "absl/status/status.h"
#include "common/status_macros.h"

namespace dgptq::worker {

absl::Status ToStatus(ncclResult_t e, const char* expr, const char* file, int line);

}  // namespace dgptq::worker

#define DGPTQ_NCCL_CHECK(expr) \
  DGPTQ_RETURN_IF_ERROR(::dgptq::worker::ToStatus((expr), #expr, __FILE__, __LINE__))
