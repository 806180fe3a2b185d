#include "kernels/cuda/check.h"

#include "absl/strings/str_format.h"

namespace dgptq::kernels::cuda {
namespace {

absl::Status Make(bool oom, const char* lib, const char* what, const char* expr, const char* file,
                  int line) {
  const std::string msg = absl::StrFormat("%s error %s in %s at %s:%d", lib, what, expr, file, line);
  return oom ? absl::ResourceExhaustedError(msg) : absl::InternalError(msg);
}

const char* CusolverName(cusolverStatus_t e) {
  switch (e) {
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    default: return "CUSOLVER_STATUS_(other)";
  }
}

}  // namespace

absl::Status ToStatus(cudaError_t e, const char* expr, const char* file, int line) {
  if (e == cudaSuccess) return absl::OkStatus();
  return Make(e == cudaErrorMemoryAllocation, "CUDA", cudaGetErrorString(e), expr, file, line);
}

absl::Status ToStatus(cublasStatus_t e, const char* expr, const char* file, int line) {
  if (e == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return Make(e == CUBLAS_STATUS_ALLOC_FAILED, "cuBLAS", cublasGetStatusString(e), expr, file,
              line);
}

absl::Status ToStatus(cusolverStatus_t e, const char* expr, const char* file, int line) {
  if (e == CUSOLVER_STATUS_SUCCESS) return absl::OkStatus();
  return Make(e == CUSOLVER_STATUS_ALLOC_FAILED, "cuSOLVER", CusolverName(e), expr, file, line);
}

}  // namespace dgptq::kernels::cuda
