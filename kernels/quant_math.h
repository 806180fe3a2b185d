// The quantization grid arithmetic shared verbatim by the CPU and CUDA backends so
// both produce the same codes (DESIGN.md "The grid"; the reference implementations'
// find_params / quantize). Plain inline functions, host and device.
#pragma once

#include <cmath>

#ifdef __CUDACC__
#define DGPTQ_HD __host__ __device__ __forceinline__
#else
#define DGPTQ_HD inline
#endif

namespace dgptq::kernels {

// Number of shrink steps of the MSE search: floor(0.8 * 100).
inline constexpr int kMseSteps = 80;
inline constexpr float kMseNorm = 2.4f;

// Integer code of w on the grid (round half to even, as torch.round).
DGPTQ_HD float QuantCode(float w, float scale, float zero, float maxq) {
  float q = rintf(w / scale) + zero;
  return fminf(fmaxf(q, 0.0f), maxq);
}
DGPTQ_HD float Dequant(float code, float scale, float zero) { return scale * (code - zero); }

// The sym adjustment of a row's range [xmin, xmax] (which includes 0), and the
// fallback to [-1, 1] for an all-zero row.
DGPTQ_HD void AdjustRange(float* xmin, float* xmax, bool sym) {
  if (sym) {
    *xmax = fmaxf(fabsf(*xmin), *xmax);
    if (*xmin < 0.0f) *xmin = -*xmax;
  }
  if (*xmin == 0.0f && *xmax == 0.0f) {
    *xmin = -1.0f;
    *xmax = 1.0f;
  }
}

// Scale and zero of an adjusted range.
DGPTQ_HD void GridFromRange(float xmin, float xmax, bool sym, float maxq, float* scale,
                            float* zero) {
  *scale = (xmax - xmin) / maxq;
  *zero = sym ? (maxq + 1.0f) * 0.5f : rintf(-xmin / *scale);
}

// The grid of the n values x(0) .. x(n-1) of one row of one group; `x` is any
// callable (the CPU passes a strided pointer, CUDA a shared/global memory reader).
template <typename X>
DGPTQ_HD void ComputeRowGridOf(const X& x, long n, int bits, bool sym, bool mse,
                               float* scale_out, float* zero_out) {
  const float maxq = static_cast<float>((1 << bits) - 1);
  float xmin = 0.0f, xmax = 0.0f;
  for (long i = 0; i < n; ++i) {
    xmin = fminf(xmin, x(i));
    xmax = fmaxf(xmax, x(i));
  }
  AdjustRange(&xmin, &xmax, sym);
  float scale, zero;
  GridFromRange(xmin, xmax, sym, maxq, &scale, &zero);
  if (mse) {
    // Shrink the range and keep the grid with the lowest sum |w - w'|^2.4.
    float best = INFINITY;
    for (int s = 0; s < kMseSteps; ++s) {
      const float p = 1.0f - static_cast<float>(s) / 100.0f;
      float s1, z1;
      GridFromRange(p * xmin, p * xmax, sym, maxq, &s1, &z1);
      float err = 0.0f;
      for (long i = 0; i < n; ++i) {
        const float w = x(i);
        err += powf(fabsf(Dequant(QuantCode(w, s1, z1, maxq), s1, z1) - w), kMseNorm);
      }
      if (err < best) {
        best = err;
        scale = s1;
        zero = z1;
      }
    }
  }
  *scale_out = scale;
  *zero_out = zero;
}

struct StridedRow {
  const float* p;
  long stride;
  DGPTQ_HD float operator()(long i) const { return p[i * stride]; }
};

// The grid of n values x[0], x[stride], ...
DGPTQ_HD void ComputeRowGrid(const float* x, long n, long stride, int bits, bool sym, bool mse,
                             float* scale_out, float* zero_out) {
  ComputeRowGridOf(StridedRow{x, stride}, n, bits, sym, mse, scale_out, zero_out);
}

}  // namespace dgptq::kernels
