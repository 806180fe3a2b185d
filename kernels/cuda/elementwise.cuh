// Small CUDA kernels behind the Backend operations other than GEMM, Cholesky and the
// GPTQ block. Matrices are row-major with a leading dimension. Each launcher runs on
// `stream` and returns cudaGetLastError(). Shape checks live in the backend.
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

namespace dgptq::kernels::cuda {

// dst: contiguous bf16 [rows, cols] of src (leading dimension ld), round to nearest even.
cudaError_t LaunchF32ToBf16(const float* src, long rows, long cols, long ld, void* dst,
                            cudaStream_t stream);
// src_is_bf16: bf16 input, else fp16.
cudaError_t LaunchAddF32ToF64(const float* src, double* dst, size_t n, bool assign,
                              cudaStream_t s);
cudaError_t LaunchF64ToF32(const double* src, float* dst, size_t n, cudaStream_t s);
cudaError_t LaunchHalfToF32(bool src_is_bf16, const void* src, float* dst, size_t n,
                            cudaStream_t stream);
// h *= s over an n x n matrix.
cudaError_t LaunchScaleSquare(float* h, long n, long ld, float s, cudaStream_t stream);
// For every i with h[i,i] == 0: w[:, i] = 0, then h[i,i] = 1.
cudaError_t LaunchDeadColumns(float* h, long n, long hld, float* w, long rows, long wld,
                              cudaStream_t stream);
// h += percent * mean(diag h) * I.
cudaError_t LaunchDampen(float* h, long n, long ld, float percent, cudaStream_t stream);
// perm = indices by descending diag(h), ties by index.
cudaError_t LaunchArgsortDiagDesc(const float* h, long n, long ld, int* perm,
                                  cudaStream_t stream);
cudaError_t LaunchPermuteColumns(const float* src, long rows, long cols, long sld,
                                 const int* perm, float* dst, long dld, cudaStream_t stream);
cudaError_t LaunchPermuteSymmetric(const float* src, long n, long sld, const int* perm,
                                   float* dst, long dld, cudaStream_t stream);
cudaError_t LaunchPermuteColumnsI32(const int* src, long rows, long cols, const int* perm,
                                    int* dst, cudaStream_t stream);
cudaError_t LaunchComputeGrid(const float* w, long rows, long cols, long ld, int bits, bool sym,
                              bool mse, float* scale, float* zero, cudaStream_t stream);
cudaError_t LaunchQuantizeRtn(float* w, long rows, long cols, long ld, int bits,
                              const int* col_group, const float* scales, const float* zeros,
                              int* codes, cudaStream_t stream);
// w[r, c] = scales[g, r] * (codes[r, c] - zeros[g, r]), g = col_group[c]; codes ld = cols.
cudaError_t LaunchDequantize(const int* codes, long rows, long cols, const int* col_group,
                             const float* scales, const float* zeros, float* w, long ld,
                             cudaStream_t stream);
// *out = sum of x[0..n) in double.
cudaError_t LaunchSum(const float* x, size_t n, double* out, cudaStream_t stream);
// Column-major lower triangle copied onto the upper one (a symmetric matrix).
cudaError_t LaunchMirrorLower(float* a, long n, long ld, cudaStream_t stream);
// Zeroes the row-major strict lower triangle.
cudaError_t LaunchZeroStrictLower(float* a, long n, long ld, cudaStream_t stream);

}  // namespace dgptq::kernels::cuda
