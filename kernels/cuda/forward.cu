#include "kernels/cuda/forward.cuh"

namespace dgptq::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// Block-wide sum of one double per thread (blockDim.x == kThreads).
__device__ double BlockSum(double v, double* scratch) {
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (int step = kThreads / 2; step > 0; step /= 2) {
    if (threadIdx.x < step) scratch[threadIdx.x] += scratch[threadIdx.x + step];
    __syncthreads();
  }
  const double total = scratch[0];
  __syncthreads();
  return total;
}

__device__ float BlockMax(float v, float* scratch) {
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (int step = kThreads / 2; step > 0; step /= 2) {
    if (threadIdx.x < step) scratch[threadIdx.x] = fmaxf(scratch[threadIdx.x], scratch[threadIdx.x + step]);
    __syncthreads();
  }
  const float m = scratch[0];
  __syncthreads();
  return m;
}

__global__ void EmbeddingKernel(const int* ids, const float* table, long tld, long cols,
                                float* out, long old) {
  const long r = blockIdx.x;
  const float* src = table + static_cast<long>(ids[r]) * tld;
  for (long c = threadIdx.x; c < cols; c += blockDim.x) out[r * old + c] = src[c];
}

// One block per row.
__global__ void NormKernel(bool layer_norm, const float* x, long xld, long cols, const float* w,
                           const float* b, float eps, float* out, long old) {
  __shared__ double scratch[kThreads];
  const float* xr = x + blockIdx.x * xld;
  double mean = 0;
  if (layer_norm) {
    double s = 0;
    for (long c = threadIdx.x; c < cols; c += kThreads) s += xr[c];
    mean = BlockSum(s, scratch) / cols;
  }
  double ss = 0;
  for (long c = threadIdx.x; c < cols; c += kThreads) ss += (xr[c] - mean) * (xr[c] - mean);
  const float inv = rsqrtf(static_cast<float>(BlockSum(ss, scratch) / cols) + eps);
  float* o = out + blockIdx.x * old;
  for (long c = threadIdx.x; c < cols; c += kThreads) {
    o[c] = layer_norm ? static_cast<float>(xr[c] - mean) * inv * w[c] + b[c] : w[c] * (xr[c] * inv);
  }
}

__global__ void ElementwiseKernel(int op, float* x, long xld, const float* y, long yld, long rows,
                                  long cols, float* out, long old) {
  const size_t n = size_t(rows) * cols;
  for (size_t k = blockIdx.x * size_t{blockDim.x} + threadIdx.x; k < n; k += size_t{gridDim.x} * blockDim.x) {
    const long r = k / cols, c = k % cols;
    float& xv = x[r * xld + c];
    switch (op) {
      case 0: xv += y[c]; break;
      case 1: xv += y[r * yld + c]; break;
      case 2: out[r * old + c] = xv / (1.0f + expf(-xv)) * y[r * yld + c]; break;
      default: xv = fmaxf(xv, 0.0f); break;
    }
  }
}

__global__ void RopeKernel(float* x, long ld, long rows, long heads, long head_dim, long seq_len,
                           const float* inv_freq) {
  const long half = head_dim / 2;
  const size_t n = size_t(rows) * heads * half;
  for (size_t k = blockIdx.x * size_t{blockDim.x} + threadIdx.x; k < n; k += size_t{gridDim.x} * blockDim.x) {
    const long i = k % half, h = (k / half) % heads, r = k / (half * heads);
    const float angle = static_cast<float>(r % seq_len) * inv_freq[i];
    float s, c;
    sincosf(angle, &s, &c);
    float* p = x + r * ld + h * head_dim;
    const float a = p[i], b = p[i + half];
    p[i] = a * c - b * s;
    p[i + half] = b * c + a * s;
  }
}

// One block per (query row, head): scores in shared memory, then the weighted sum.
__global__ void AttentionKernel(const float* q, long qld, const float* k, long kld, const float* v,
                                long vld, long seq_len, long heads, long group, long head_dim,
                                float scale, float* out, long old) {
  extern __shared__ float p[];  // [seq_len]
  __shared__ float fscratch[kThreads];
  __shared__ double dscratch[kThreads];
  const long row = blockIdx.x, h = blockIdx.y, kh = h / group;
  const long i = row % seq_len, base = row - i;
  const float* qi = q + row * qld + h * head_dim;
  float mx = -INFINITY;
  for (long j = threadIdx.x; j <= i; j += kThreads) {
    const float* kj = k + (base + j) * kld + kh * head_dim;
    float s = 0;
    for (long d = 0; d < head_dim; ++d) s += qi[d] * kj[d];
    p[j] = s * scale;
    mx = fmaxf(mx, p[j]);
  }
  mx = BlockMax(mx, fscratch);
  double sum = 0;
  for (long j = threadIdx.x; j <= i; j += kThreads) sum += (p[j] = expf(p[j] - mx));
  sum = BlockSum(sum, dscratch);
  float* o = out + row * old + h * head_dim;
  for (long d = threadIdx.x; d < head_dim; d += kThreads) {
    float acc = 0;
    for (long j = 0; j <= i; ++j) acc += p[j] * v[(base + j) * vld + kh * head_dim + d];
    o[d] = static_cast<float>(acc / sum);
  }
}

__global__ void CrossEntropyKernel(const float* logits, long ld, long cols, const int* targets,
                                   float* nll) {
  __shared__ float fscratch[kThreads];
  __shared__ double dscratch[kThreads];
  const long r = blockIdx.x;
  const int t = targets[r];
  if (t < 0 || t >= cols) {
    if (threadIdx.x == 0) nll[r] = 0.0f;
    return;
  }
  const float* l = logits + r * ld;
  float mx = -INFINITY;
  for (long c = threadIdx.x; c < cols; c += kThreads) mx = fmaxf(mx, l[c]);
  mx = BlockMax(mx, fscratch);
  double s = 0;
  for (long c = threadIdx.x; c < cols; c += kThreads) s += exp(double(l[c]) - mx);
  s = BlockSum(s, dscratch);
  if (threadIdx.x == 0) nll[r] = static_cast<float>(log(s) + mx - l[t]);
}

unsigned Blocks(size_t n) {
  const size_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b == 0 ? 1 : (b < 1048576 ? b : 1048576));
}

}  // namespace

cudaError_t LaunchEmbedding(const int* ids, const float* table, long tld, long rows, long cols,
                            float* out, long old, cudaStream_t s) {
  if (rows > 0) EmbeddingKernel<<<rows, kThreads, 0, s>>>(ids, table, tld, cols, out, old);
  return cudaGetLastError();
}
cudaError_t LaunchNorm(bool ln, const float* x, long xld, long rows, long cols, const float* w,
                       const float* b, float eps, float* out, long old, cudaStream_t s) {
  if (rows > 0) NormKernel<<<rows, kThreads, 0, s>>>(ln, x, xld, cols, w, b, eps, out, old);
  return cudaGetLastError();
}
cudaError_t LaunchElementwise(int op, float* x, long xld, const float* y, long yld, long rows,
                              long cols, float* out, long old, cudaStream_t s) {
  ElementwiseKernel<<<Blocks(size_t(rows) * cols), kThreads, 0, s>>>(op, x, xld, y, yld, rows,
                                                                      cols, out, old);
  return cudaGetLastError();
}
cudaError_t LaunchRope(float* x, long ld, long rows, long heads, long head_dim, long seq_len,
                       const float* inv_freq, cudaStream_t s) {
  RopeKernel<<<Blocks(size_t(rows) * heads * (head_dim / 2)), kThreads, 0, s>>>(
      x, ld, rows, heads, head_dim, seq_len, inv_freq);
  return cudaGetLastError();
}
cudaError_t LaunchAttention(const float* q, long qld, const float* k, long kld, const float* v,
                            long vld, long rows, long seq_len, long heads, long kv_heads,
                            long head_dim, float scale, float* out, long old, cudaStream_t s) {
  if (seq_len > 8192) return cudaErrorInvalidValue;
  const size_t smem = seq_len * sizeof(float);
  if (smem > 48 * 1024) {
    cudaFuncSetAttribute(AttentionKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(smem));
  }
  if (rows > 0) {
    AttentionKernel<<<dim3(rows, heads), kThreads, smem, s>>>(q, qld, k, kld, v, vld, seq_len,
                                                             heads, heads / kv_heads, head_dim,
                                                             scale, out, old);
  }
  return cudaGetLastError();
}
cudaError_t LaunchCrossEntropy(const float* logits, long ld, long rows, long cols,
                               const int* targets, float* nll, cudaStream_t s) {
  if (rows > 0) CrossEntropyKernel<<<rows, kThreads, 0, s>>>(logits, ld, cols, targets, nll);
  return cudaGetLastError();
}

}  // namespace dgptq::kernels::cuda
