// The fused GPTQ in-block kernel (GPTQ Alg. 1 inner loop): rows in parallel, one
// thread per row, the block's columns of W and of the inverse-Hessian factor in
// shared memory. Semantics: kernels/backend.h, GptqBlockArgs.
#pragma once

#include <cuda_runtime.h>

namespace dgptq::kernels::cuda {

struct GptqBlockParams {
  float* w;
  long w_ld, rows, cols;
  const float* hinv;
  long hinv_ld;
  long begin, end;
  int bits;
  bool sym, mse;
  int group_size;
  bool dynamic_groups;
  const int* col_group;
  float* scales;
  float* zeros;
  int* codes;
  float* err;
  long err_ld;
  float* loss;
};

// Launches on `stream`; returns cudaGetLastError().
cudaError_t LaunchGptqBlock(const GptqBlockParams& p, cudaStream_t stream);

}  // namespace dgptq::kernels::cuda
