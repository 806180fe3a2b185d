// GPTQ and RTN on one linear module (Frantar et al., 2022), plain code over a Backend.
//
// W is [rows = out_features, cols = in_features]; H is [cols, cols], the sum of X^T X
// over `nsamples` calibration rows (divided by nsamples once, here). Codes do not
// depend on H's scale; the reported loss is that of the mean Hessian.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "common/quant_config.h"
#include "common/tensor.h"
#include "kernels/backend.h"
#include "kernels/packing.h"

namespace dgptq::worker {

struct GptqStats {
  double loss = 0;          // sum over entries of err^2 / 2 (GPTQ's proxy loss)
  float damp_used = 0;      // damping percent that made H positive definite
  int damp_raises = 0;      // how many times damping was raised x10
  double seconds = 0;
};

// Device-resident module: inputs on the backend's device, overwritten.
struct DeviceModule {
  kernels::Mat w;  // fp32 [rows, cols]; becomes the dequantized weight
  kernels::Mat h;  // fp32 [cols, cols] Hessian sum; consumed (garbage afterwards)
};

// Codes, grids and g_idx left on the device by RunGptq / RunRtn.
struct DeviceQuantized {
  kernels::Buffer codes;   // int32 [rows, cols]
  kernels::Buffer scales;  // fp32 [groups, rows]
  kernels::Buffer zeros;   // fp32 [groups, rows]
  std::vector<int32_t> g_idx;  // host, [cols]
  GptqStats stats;
};

// Runs GPTQ in place on the device. InvalidArgument for bad shapes/config or a
// non-finite Hessian; FailedPrecondition when H is not positive definite even with
// damping raised to cfg.damp_max.
absl::StatusOr<DeviceQuantized> RunGptq(kernels::Backend& b, const DeviceModule& m,
                                        double nsamples, const QuantConfig& cfg);
// Round to nearest on the same grid (act_order ignored), in place on w.
absl::StatusOr<DeviceQuantized> RunRtn(kernels::Backend& b, const kernels::Mat& w,
                                       const QuantConfig& cfg);

// Host result of one module.
struct ModuleResult {
  kernels::QuantizedWeight q;
  Tensor dequantized;  // fp32 [rows, cols]
  GptqStats stats;
};

// Copies a module's result to the host (w: the dequantized weight on the device); without
// `with_dequantized` the result's `dequantized` stays empty (the codes and grid only).
absl::StatusOr<ModuleResult> DownloadResult(kernels::Backend& b, const kernels::Mat& w,
                                            const DeviceQuantized& d, const QuantConfig& cfg,
                                            bool with_dequantized = true);

// Host convenience wrappers: upload, run, download. `weight` is any float dtype
// [rows, cols]; `hessian` fp32 [cols, cols] (a sum or a mean).
absl::StatusOr<ModuleResult> QuantizeModuleGptq(kernels::Backend& b, const TensorView& weight,
                                                const TensorView& hessian, double nsamples,
                                                const QuantConfig& cfg);
absl::StatusOr<ModuleResult> QuantizeModuleRtn(kernels::Backend& b, const TensorView& weight,
                                               const QuantConfig& cfg);

}  // namespace dgptq::worker
