// Host wrappers around RunGptq / RunRtn: upload, run, download.
#include <cmath>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "worker/gptq/gptq.h"

namespace dgptq::worker {
namespace {

using kernels::Backend;
using kernels::Buffer;
using kernels::Mat;

absl::Status CheckWeight(const TensorView& w) {
  if (w.shape.size() != 2 || !IsFloat(w.dtype)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "weight must be a 2-D float tensor, got %s %s", DTypeName(w.dtype),
        ShapeString(w.shape)));
  }
  return absl::OkStatus();
}

// Uploads a float tensor as fp32 into a new device buffer.
absl::StatusOr<Buffer> UploadF32(Backend& b, const TensorView& t) {
  DGPTQ_ASSIGN_OR_RETURN(Buffer raw, kernels::UploadNew(b, t.data, t.nbytes()));
  if (t.dtype == DType::kF32) return raw;
  DGPTQ_ASSIGN_OR_RETURN(Buffer f32, b.Allocate(t.numel() * sizeof(float)));
  DGPTQ_RETURN_IF_ERROR(b.ConvertToF32(t.dtype, raw.data(), f32.f32(), t.numel()));
  return f32;
}

}  // namespace

absl::StatusOr<ModuleResult> DownloadResult(Backend& b, const Mat& w, const DeviceQuantized& d,
                                            const QuantConfig& cfg, bool with_dequantized) {
  ModuleResult r;
  r.stats = d.stats;
  kernels::QuantizedWeight& q = r.q;
  q.bits = cfg.bits;
  q.group_size = cfg.group_size;
  q.sym = cfg.sym;
  q.rows = w.rows;
  q.cols = w.cols;
  const size_t groups = cfg.NumGroups(w.cols);
  q.codes.resize(w.rows * w.cols);
  q.scales.resize(groups * w.rows);
  q.zeros.resize(groups * w.rows);
  q.g_idx = d.g_idx;
  DGPTQ_RETURN_IF_ERROR(b.Download(d.codes.data(), q.codes.data(), q.codes.size() * 4));
  DGPTQ_RETURN_IF_ERROR(b.Download(d.scales.data(), q.scales.data(), q.scales.size() * 4));
  DGPTQ_RETURN_IF_ERROR(b.Download(d.zeros.data(), q.zeros.data(), q.zeros.size() * 4));
  if (with_dequantized) {
    r.dequantized = Tensor(DType::kF32, {w.rows, w.cols});
    DGPTQ_RETURN_IF_ERROR(b.Download(w.data, r.dequantized.data(), r.dequantized.nbytes()));
  }
  return r;
}

absl::StatusOr<ModuleResult> QuantizeModuleGptq(Backend& b, const TensorView& weight,
                                                const TensorView& hessian, double nsamples,
                                                const QuantConfig& cfg) {
  DGPTQ_RETURN_IF_ERROR(CheckWeight(weight));
  if (hessian.dtype != DType::kF32 || hessian.shape.size() != 2 ||
      hessian.shape[0] != hessian.shape[1]) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Hessian must be a square F32 matrix, got %s %s", DTypeName(hessian.dtype),
        ShapeString(hessian.shape)));
  }
  if (hessian.shape[0] != weight.shape[1]) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Hessian %s does not match weight %s: expected [%d, %d]", ShapeString(hessian.shape),
        ShapeString(weight.shape), weight.shape[1], weight.shape[1]));
  }
  const int64_t rows = weight.shape[0], cols = weight.shape[1];
  DGPTQ_ASSIGN_OR_RETURN(Buffer w, UploadF32(b, weight));
  DGPTQ_ASSIGN_OR_RETURN(Buffer h, UploadF32(b, hessian));
  const DeviceModule m{Mat{w.f32(), rows, cols, cols}, Mat{h.f32(), cols, cols, cols}};
  DGPTQ_ASSIGN_OR_RETURN(DeviceQuantized d, RunGptq(b, m, nsamples, cfg));
  return DownloadResult(b, m.w, d, cfg);
}

absl::StatusOr<ModuleResult> QuantizeModuleRtn(Backend& b, const TensorView& weight,
                                               const QuantConfig& cfg) {
  DGPTQ_RETURN_IF_ERROR(CheckWeight(weight));
  const int64_t rows = weight.shape[0], cols = weight.shape[1];
  DGPTQ_ASSIGN_OR_RETURN(Buffer w, UploadF32(b, weight));
  const Mat wm{w.f32(), rows, cols, cols};
  DGPTQ_ASSIGN_OR_RETURN(DeviceQuantized d, RunRtn(b, wm, cfg));
  return DownloadResult(b, wm, d, cfg);
}

}  // namespace dgptq::worker
