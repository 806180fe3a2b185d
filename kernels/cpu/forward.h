// CPU implementations of the Backend's model-forward operations (see backend.h for
// the contracts). `threads` is the CPU backend's worker count.
#pragma once

#include "absl/status/status.h"
#include "kernels/backend.h"

namespace dgptq::kernels::cpu {

absl::Status Embedding(int threads, const int32_t* ids, const Mat& table, const Mat& out);
absl::Status RmsNorm(int threads, const Mat& x, const float* weight, float eps, const Mat& out);
absl::Status LayerNorm(int threads, const Mat& x, const float* weight, const float* bias,
                       float eps, const Mat& out);
absl::Status AddBias(int threads, const Mat& x, const float* bias);
absl::Status Add(int threads, const Mat& x, const Mat& y);
absl::Status SiluMul(int threads, const Mat& gate, const Mat& up, const Mat& out);
absl::Status Relu(int threads, const Mat& x);
absl::Status Rope(int threads, const Mat& x, int64_t heads, int64_t head_dim, int64_t seq_len,
                  const float* inv_freq);
absl::Status Attention(int threads, const Mat& q, const Mat& k, const Mat& v, int64_t seq_len,
                       int64_t heads, int64_t kv_heads, int64_t head_dim, float scale,
                       const Mat& out);
absl::Status CrossEntropy(int threads, const Mat& logits, const int32_t* targets, float* nll);

}  // namespace dgptq::kernels::cpu
