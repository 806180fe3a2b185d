#include "kernels/backend.h"

#include "absl/strings/str_cat.h"

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

absl::StatusOr<DeviceKind> ParseDeviceKind(const std::string& name) {
  if (name == "cpu") return DeviceKind::kCpu;
  if (name == "cuda" || name == "gpu") return DeviceKind::kCuda;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device '", name, "' (expected cpu or cuda)"));
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(DeviceKind kind) {
  if (kind == DeviceKind::kCpu) return MakeCpuBackend();
  return MakeCudaBackend();
}

#ifndef DGPTQ_HAVE_CUDA
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int) {
  return absl::UnavailableError("dgptq was built without CUDA; use --device cpu");
}
bool CudaAvailable() { return false; }
#endif

}  // namespace dgptq::kernels
