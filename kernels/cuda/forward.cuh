// CUDA kernels of the Backend's model-forward operations (contracts in
// kernels/backend.h). Row-major fp32 with leading dimensions; each launcher runs on
// `stream` and returns cudaGetLastError().
#pragma once

#include <cuda_runtime.h>

namespace dgptq::kernels::cuda {

cudaError_t LaunchEmbedding(const int* ids, const float* table, long table_ld, long rows,
                            long cols, float* out, long out_ld, cudaStream_t stream);
// layer_norm: subtract the mean and add `bias` (LayerNorm); else RMSNorm (bias unused).
cudaError_t LaunchNorm(bool layer_norm, const float* x, long x_ld, long rows, long cols,
                       const float* weight, const float* bias, float eps, float* out,
                       long out_ld, cudaStream_t stream);
// op: 0 x += bias[c], 1 x += y, 2 out = silu(x) * y, 3 x = relu(x).
cudaError_t LaunchElementwise(int op, float* x, long x_ld, const float* y, long y_ld, long rows,
                              long cols, float* out, long out_ld, cudaStream_t stream);
cudaError_t LaunchRope(float* x, long ld, long rows, long heads, long head_dim, long seq_len,
                       const float* inv_freq, cudaStream_t stream);
// seq_len <= 8192.
cudaError_t LaunchAttention(const float* q, long q_ld, const float* k, long k_ld, const float* v,
                            long v_ld, long rows, long seq_len, long heads, long kv_heads,
                            long head_dim, float scale, float* out, long out_ld,
                            cudaStream_t stream);
cudaError_t LaunchCrossEntropy(const float* logits, long ld, long rows, long cols,
                               const int* targets, float* nll, cudaStream_t stream);

}  // namespace dgptq::kernels::cuda
