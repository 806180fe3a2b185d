// One way to turn CUDA, cuBLAS and cuSOLVER results into absl::Status: the failing
// expression, file:line and the library's own error string. Out-of-memory maps to
// ResourceExhausted, everything else to Internal.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include "absl/status/status.h"
#include "common/status_macros.h"

namespace dgptq::kernels::cuda {

absl::Status ToStatus(cudaError_t e, const char* expr, const char* file, int line);
absl::Status ToStatus(cublasStatus_t e, const char* expr, const char* file, int line);
absl::Status ToStatus(cusolverStatus_t e, const char* expr, const char* file, int line);

}  // namespace dgptq::kernels::cuda

#define DGPTQ_CUDA_CHECK(expr) \
  DGPTQ_RETURN_IF_ERROR(::dgptq::kernels::cuda::ToStatus((expr), #expr, __FILE__, __LINE__))
