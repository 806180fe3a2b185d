#include "worker/model/layers.h"

#include <cmath>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace dgptq::worker {

using kernels::Backend;
using kernels::Mat;

absl::StatusOr<DeviceTensor> NewDeviceTensor(Backend& b, int64_t rows, int64_t cols) {
  DeviceTensor d;
  DGPTQ_ASSIGN_OR_RETURN(d.buf, b.Allocate(static_cast<size_t>(rows * cols) * sizeof(float)));
  d.mat = Mat{d.buf.f32(), rows, cols, cols};
  return d;
}

absl::StatusOr<DeviceTensor> UploadF32(Backend& b, const TensorView& t) {
  if (!IsFloat(t.dtype)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("expected a float tensor, got %s", DTypeName(t.dtype)));
  }
  const int64_t rows = t.shape.size() >= 2 ? t.shape[0] : 1;
  const int64_t cols = rows == 0 ? 0 : t.numel() / rows;
  DGPTQ_ASSIGN_OR_RETURN(DeviceTensor d, NewDeviceTensor(b, rows, cols));
  if (t.dtype == DType::kF32) {
    DGPTQ_RETURN_IF_ERROR(b.Upload(t.data, d.buf.data(), t.nbytes()));
    return d;
  }
  DGPTQ_ASSIGN_OR_RETURN(kernels::Buffer raw, kernels::UploadNew(b, t.data, t.nbytes()));
  DGPTQ_RETURN_IF_ERROR(b.ConvertToF32(t.dtype, raw.data(), d.buf.f32(), t.numel()));
  DGPTQ_RETURN_IF_ERROR(b.Synchronize());
  return d;
}

absl::StatusOr<DeviceTensor> LoadTensor(Backend& b, ModelReader& r, const std::string& name,
                                        const Shape& expected) {
  Shape got;
  absl::StatusOr<DeviceTensor> d;
  if (r.HasTensor(name)) {
    DGPTQ_ASSIGN_OR_RETURN(TensorView v, r.Raw(name));
    got = v.shape;
    if (got == expected) d = UploadF32(b, v);
  } else {
    DGPTQ_ASSIGN_OR_RETURN(Tensor w, r.LoadWeightF32(name));
    got = w.shape();
    if (got == expected) d = UploadF32(b, w.view());
  }
  if (got != expected) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: tensor %s has shape %s, but config.json implies %s", r.dir(), name,
                        ShapeString(got), ShapeString(expected)));
  }
  return d;
}

absl::Status Linear(Backend& b, const Mat& x, const Mat& w, const float* bias, const Mat& out,
                    bool bf16) {
  DGPTQ_RETURN_IF_ERROR(kernels::GemmIn(b, bf16, false, true, 1.0f, x, w, 0.0f, out));
  if (bias != nullptr) DGPTQ_RETURN_IF_ERROR(b.AddBias(out, bias));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> RopeInvFreq(const ModelConfig& c) {
  const int64_t d = c.head_dim;
  std::vector<float> f(d / 2);
  for (int64_t i = 0; i < d / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(d);
    f[i] = 1.0f / std::pow(static_cast<float>(c.rope_theta), exponent);
  }
  const RopeScaling& s = c.rope_scaling;
  if (s.type == "default" || s.type.empty()) return f;
  if (s.type == "linear") {
    for (float& v : f) v /= static_cast<float>(s.factor);
    return f;
  }
  if (s.type == "llama3") {
    // Llama 3.1 frequency bands: long wavelengths divided by `factor`, short kept,
    // the band between interpolated smoothly.
    const double old_ctx = s.original_max_position_embeddings;
    const double low_wl = old_ctx / s.low_freq_factor, high_wl = old_ctx / s.high_freq_factor;
    for (float& v : f) {
      const double wl = 2 * M_PI / v;
      if (wl < high_wl) continue;
      if (wl > low_wl) {
        v = static_cast<float>(v / s.factor);
        continue;
      }
      const double smooth = (old_ctx / wl - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      v = static_cast<float>((1 - smooth) * v / s.factor + smooth * v);
    }
    return f;
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "rope_scaling type '%s' is not supported (supported: default, linear, llama3)", s.type));
}

}  // namespace dgptq::worker
