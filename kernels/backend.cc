#include "kernels/backend.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace dgptq::kernels {

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    Reset();
    data_ = o.data_;
    bytes_ = o.bytes_;
    free_ = std::move(o.free_);
    o.data_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

void Buffer::Reset() {
  if (data_ != nullptr && free_) free_(data_);
  data_ = nullptr;
  bytes_ = 0;
}

absl::Status CheckMat(const Mat& m, const char* what) {
  if (m.rows < 0 || m.cols < 0 || m.ld < m.cols || (m.data == nullptr && m.rows * m.cols > 0)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: bad matrix view (rows=%d cols=%d ld=%d)", what, m.rows, m.cols, m.ld));
  }
  return absl::OkStatus();
}

absl::Status CheckSquare(const Mat& m, const char* what) {
  DGPTQ_RETURN_IF_ERROR(CheckMat(m, what));
  if (m.rows != m.cols) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s must be square, got [%d, %d]", what, m.rows, m.cols));
  }
  return absl::OkStatus();
}

absl::StatusOr<Buffer> UploadNew(Backend& backend, const void* host, size_t bytes) {
  DGPTQ_ASSIGN_OR_RETURN(Buffer d, backend.Allocate(bytes));
  DGPTQ_RETURN_IF_ERROR(backend.Upload(host, d.data(), bytes));
  return d;
}

absl::Status GemmIn(Backend& backend, bool bf16, bool trans_a, bool trans_b, float alpha,
                    const Mat& a, const Mat& b, float beta, const Mat& c) {
  return bf16 ? backend.GemmBf16(trans_a, trans_b, alpha, a, b, beta, c)
              : backend.Gemm(trans_a, trans_b, alpha, a, b, beta, c);
}

absl::StatusOr<DeviceKind> ParseDeviceKind(const std::string& name) {
  if (name == "cpu") return DeviceKind::kCpu;
  if (name == "cuda" || name == "gpu") return DeviceKind::kCuda;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device '", name, "' (expected cpu or cuda)"));
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(DeviceKind kind, int cpu_threads, int gpu) {
  if (kind == DeviceKind::kCpu) return MakeCpuBackend(cpu_threads);
  return MakeCudaBackend(gpu);
}

#ifndef DGPTQ_HAVE_CUDA
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int) {
  return absl::UnavailableError("dgptq was built without CUDA; use --device cpu");
}
bool CudaAvailable() { return false; }
#endif

}  // namespace dgptq::kernels
