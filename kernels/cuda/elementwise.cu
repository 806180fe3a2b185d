#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/elementwise.cuh"
#include "kernels/quant_math.h"

namespace dgptq::kernels::cuda {
namespace {

constexpr int kThreads = 256;

unsigned Blocks(size_t n) {
  const size_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65535u * 16u ? (b == 0 ? 1 : b) : 65535u * 16u);
}

// Grid-stride loop over [0, n).
#define DGPTQ_FOR_EACH(i, n) \
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < (n); i += size_t{gridDim.x} * blockDim.x)

__global__ void HalfToF32Kernel(bool bf16, const void* src, float* dst, size_t n) {
  DGPTQ_FOR_EACH(i, n) {
    dst[i] = bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(src)[i])
                  : __half2float(static_cast<const __half*>(src)[i]);
  }
}

// dst [rows, cols] contiguous bf16 = src [rows, cols] (leading dimension ld), rounded to
// nearest even.
__global__ void F32ToBf16Kernel(const float* src, long rows, long cols, long ld,
                                __nv_bfloat16* dst) {
  DGPTQ_FOR_EACH(i, size_t(rows) * cols) {
    dst[i] = __float2bfloat16_rn(src[(i / cols) * ld + i % cols]);
  }
}

__global__ void AddF32ToF64Kernel(const float* src, double* dst, size_t n, bool assign) {
  DGPTQ_FOR_EACH(i, n) dst[i] = (assign ? 0.0 : dst[i]) + static_cast<double>(src[i]);
}

__global__ void F64ToF32Kernel(const double* src, float* dst, size_t n) {
  DGPTQ_FOR_EACH(i, n) dst[i] = __double2float_rn(src[i]);
}

__global__ void ScaleKernel(float* h, long n, long ld, float s) {
  DGPTQ_FOR_EACH(k, size_t(n) * n) h[(k / n) * ld + k % n] *= s;
}

__global__ void ZeroDeadKernel(const float* h, long n, long hld, float* w, long rows, long wld) {
  DGPTQ_FOR_EACH(k, size_t(rows) * n) {
    const long c = k % n;
    if (h[c * hld + c] == 0.0f) w[(k / n) * wld + c] = 0.0f;
  }
}

__global__ void UnitDeadKernel(float* h, long n, long ld) {
  DGPTQ_FOR_EACH(i, size_t(n)) {
    if (h[i * ld + i] == 0.0f) h[i * ld + i] = 1.0f;
  }
}

// One block: mean of the diagonal in shared memory, then added to it.
__global__ void DampenKernel(float* h, long n, long ld, float percent) {
  __shared__ double part[1024];
  double s = 0;
  for (long i = threadIdx.x; i < n; i += blockDim.x) s += h[i * ld + i];
  part[threadIdx.x] = s;
  __syncthreads();
  for (int step = blockDim.x / 2; step > 0; step /= 2) {
    if (threadIdx.x < step) part[threadIdx.x] += part[threadIdx.x + step];
    __syncthreads();
  }
  const float add = static_cast<float>(percent * (part[0] / n));
  for (long i = threadIdx.x; i < n; i += blockDim.x) h[i * ld + i] += add;
}

// Rank of each diagonal entry among all (a stable descending sort by counting).
__global__ void ArgsortKernel(const float* h, long n, long ld, int* perm) {
  DGPTQ_FOR_EACH(i, size_t(n)) {
    const float di = h[i * ld + i];
    long rank = 0;
    for (long j = 0; j < n; ++j) {
      const float dj = h[j * ld + j];
      rank += (dj > di) || (dj == di && j < static_cast<long>(i));
    }
    perm[rank] = static_cast<int>(i);
  }
}

__global__ void PermuteColsKernel(const float* src, long rows, long cols, long sld,
                                  const int* perm, float* dst, long dld) {
  DGPTQ_FOR_EACH(k, size_t(rows) * cols) {
    const long r = k / cols, c = k % cols;
    dst[r * dld + c] = src[r * sld + perm[c]];
  }
}

__global__ void PermuteSymKernel(const float* src, long n, long sld, const int* perm, float* dst,
                                 long dld) {
  DGPTQ_FOR_EACH(k, size_t(n) * n) {
    const long i = k / n, j = k % n;
    dst[i * dld + j] = src[perm[i] * sld + perm[j]];
  }
}

__global__ void PermuteColsI32Kernel(const int* src, long rows, long cols, const int* perm,
                                     int* dst) {
  DGPTQ_FOR_EACH(k, size_t(rows) * cols) {
    const long r = k / cols, c = k % cols;
    dst[k] = src[r * cols + perm[c]];
  }
}

__global__ void GridKernel(const float* w, long rows, long cols, long ld, int bits, bool sym,
                           bool mse, float* scale, float* zero) {
  DGPTQ_FOR_EACH(r, size_t(rows)) {
    ComputeRowGrid(w + r * ld, cols, 1, bits, sym, mse, &scale[r], &zero[r]);
  }
}

__global__ void RtnKernel(float* w, long rows, long cols, long ld, int bits, const int* col_group,
                          const float* scales, const float* zeros, int* codes) {
  const float maxq = static_cast<float>((1 << bits) - 1);
  DGPTQ_FOR_EACH(k, size_t(rows) * cols) {
    const long r = k / cols, c = k % cols;
    const long g = col_group[c] * rows + r;
    const float q = QuantCode(w[r * ld + c], scales[g], zeros[g], maxq);
    codes[k] = static_cast<int>(q);
    w[r * ld + c] = Dequant(q, scales[g], zeros[g]);
  }
}

__global__ void DequantizeKernel(const int* codes, long rows, long cols, const int* col_group,
                                 const float* scales, const float* zeros, float* w, long ld) {
  DGPTQ_FOR_EACH(k, size_t(rows) * cols) {
    const long r = k / cols, c = k % cols;
    const long g = col_group[c] * rows + r;
    w[r * ld + c] = Dequant(static_cast<float>(codes[k]), scales[g], zeros[g]);
  }
}

__global__ void SumKernel(const float* x, size_t n, double* out) {
  __shared__ double part[1024];
  double s = 0;
  for (size_t i = threadIdx.x; i < n; i += blockDim.x) s += x[i];
  part[threadIdx.x] = s;
  __syncthreads();
  for (int step = blockDim.x / 2; step > 0; step /= 2) {
    if (threadIdx.x < step) part[threadIdx.x] += part[threadIdx.x + step];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = part[0];
}

// Column-major (i, j) lives at a[j * ld + i]; lower means i > j.
__global__ void MirrorLowerKernel(float* a, long n, long ld) {
  DGPTQ_FOR_EACH(k, size_t(n) * n) {
    const long i = k / n, j = k % n;
    if (i < j) a[j * ld + i] = a[i * ld + j];
  }
}

__global__ void ZeroStrictLowerKernel(float* a, long n, long ld) {
  DGPTQ_FOR_EACH(k, size_t(n) * n) {
    const long i = k / n, j = k % n;
    if (j < i) a[i * ld + j] = 0.0f;
  }
}

}  // namespace

cudaError_t LaunchHalfToF32(bool bf16, const void* src, float* dst, size_t n, cudaStream_t s) {
  HalfToF32Kernel<<<Blocks(n), kThreads, 0, s>>>(bf16, src, dst, n);
  return cudaGetLastError();
}
cudaError_t LaunchF32ToBf16(const float* src, long rows, long cols, long ld, void* dst,
                            cudaStream_t s) {
  if (rows == 0 || cols == 0) return cudaSuccess;
  F32ToBf16Kernel<<<Blocks(size_t(rows) * cols), kThreads, 0, s>>>(
      src, rows, cols, ld, static_cast<__nv_bfloat16*>(dst));
  return cudaGetLastError();
}
cudaError_t LaunchAddF32ToF64(const float* src, double* dst, size_t n, bool assign,
                              cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  AddF32ToF64Kernel<<<Blocks(n), kThreads, 0, s>>>(src, dst, n, assign);
  return cudaGetLastError();
}
cudaError_t LaunchF64ToF32(const double* src, float* dst, size_t n, cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  F64ToF32Kernel<<<Blocks(n), kThreads, 0, s>>>(src, dst, n);
  return cudaGetLastError();
}
cudaError_t LaunchScaleSquare(float* h, long n, long ld, float f, cudaStream_t s) {
  ScaleKernel<<<Blocks(size_t(n) * n), kThreads, 0, s>>>(h, n, ld, f);
  return cudaGetLastError();
}
cudaError_t LaunchDeadColumns(float* h, long n, long hld, float* w, long rows, long wld,
                              cudaStream_t s) {
  ZeroDeadKernel<<<Blocks(size_t(rows) * n), kThreads, 0, s>>>(h, n, hld, w, rows, wld);
  UnitDeadKernel<<<Blocks(n), kThreads, 0, s>>>(h, n, hld);
  return cudaGetLastError();
}
cudaError_t LaunchDampen(float* h, long n, long ld, float percent, cudaStream_t s) {
  DampenKernel<<<1, 1024, 0, s>>>(h, n, ld, percent);
  return cudaGetLastError();
}
cudaError_t LaunchArgsortDiagDesc(const float* h, long n, long ld, int* perm, cudaStream_t s) {
  ArgsortKernel<<<Blocks(n), kThreads, 0, s>>>(h, n, ld, perm);
  return cudaGetLastError();
}
cudaError_t LaunchPermuteColumns(const float* src, long rows, long cols, long sld,
                                 const int* perm, float* dst, long dld, cudaStream_t s) {
  PermuteColsKernel<<<Blocks(size_t(rows) * cols), kThreads, 0, s>>>(src, rows, cols, sld, perm,
                                                                      dst, dld);
  return cudaGetLastError();
}
cudaError_t LaunchPermuteSymmetric(const float* src, long n, long sld, const int* perm,
                                   float* dst, long dld, cudaStream_t s) {
  PermuteSymKernel<<<Blocks(size_t(n) * n), kThreads, 0, s>>>(src, n, sld, perm, dst, dld);
  return cudaGetLastError();
}
cudaError_t LaunchPermuteColumnsI32(const int* src, long rows, long cols, const int* perm,
                                    int* dst, cudaStream_t s) {
  PermuteColsI32Kernel<<<Blocks(size_t(rows) * cols), kThreads, 0, s>>>(src, rows, cols, perm,
                                                                         dst);
  return cudaGetLastError();
}
cudaError_t LaunchComputeGrid(const float* w, long rows, long cols, long ld, int bits, bool sym,
                              bool mse, float* scale, float* zero, cudaStream_t s) {
  GridKernel<<<Blocks(rows), kThreads, 0, s>>>(w, rows, cols, ld, bits, sym, mse, scale, zero);
  return cudaGetLastError();
}
cudaError_t LaunchQuantizeRtn(float* w, long rows, long cols, long ld, int bits,
                              const int* col_group, const float* scales, const float* zeros,
                              int* codes, cudaStream_t s) {
  RtnKernel<<<Blocks(size_t(rows) * cols), kThreads, 0, s>>>(w, rows, cols, ld, bits, col_group,
                                                              scales, zeros, codes);
  return cudaGetLastError();
}
cudaError_t LaunchDequantize(const int* codes, long rows, long cols, const int* col_group,
                             const float* scales, const float* zeros, float* w, long ld,
                             cudaStream_t s) {
  if (rows == 0 || cols == 0) return cudaSuccess;
  DequantizeKernel<<<Blocks(size_t(rows) * cols), kThreads, 0, s>>>(codes, rows, cols, col_group,
                                                                     scales, zeros, w, ld);
  return cudaGetLastError();
}
cudaError_t LaunchSum(const float* x, size_t n, double* out, cudaStream_t s) {
  SumKernel<<<1, 1024, 0, s>>>(x, n, out);
  return cudaGetLastError();
}
cudaError_t LaunchMirrorLower(float* a, long n, long ld, cudaStream_t s) {
  MirrorLowerKernel<<<Blocks(size_t(n) * n), kThreads, 0, s>>>(a, n, ld);
  return cudaGetLastError();
}
cudaError_t LaunchZeroStrictLower(float* a, long n, long ld, cudaStream_t s) {
  ZeroStrictLowerKernel<<<Blocks(size_t(n) * n), kThreads, 0, s>>>(a, n, ld);
  return cudaGetLastError();
}

}  // namespace dgptq::kernels::cuda
