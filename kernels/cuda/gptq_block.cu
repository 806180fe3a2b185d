#include "kernels/cuda/gptq_block.cuh"
#include "kernels/quant_math.h"

namespace dgptq::kernels::cuda {
namespace {

constexpr int kRows = 32;          // rows (threads) per CTA
constexpr int kStride = kRows + 1;  // padded shared column: conflict-free transposed loads

__device__ __forceinline__ long MinL(long a, long b) { return a < b ? a : b; }

// Reads W[r, c] for a group that may reach past the block: in-block columns from
// shared memory (updated in place), later ones from global memory (already fully
// updated: the caller ends blocks so that a group starting mid-block fits in it).
struct GroupReader {
  const float* sw;
  const float* grow;
  long begin, end, c0;
  int t;
  __device__ float operator()(long i) const {
    const long c = c0 + i;
    return c < end ? sw[(c - begin) * kStride + t] : grow[c];
  }
};

template <bool kSharedHinv>
__global__ void GptqBlockKernel(GptqBlockParams p) {
  extern __shared__ float smem[];
  const int count = static_cast<int>(p.end - p.begin);
  const int t = threadIdx.x;
  const long r0 = static_cast<long>(blockIdx.x) * kRows;
  const int nrows = static_cast<int>(MinL(kRows, p.rows - r0));
  float* sw = smem;                       // [count][kStride] W block, transposed
  float* serr = sw + count * kStride;     // [count][kStride] errors
  float* shinv = serr + count * kStride;  // [count][count] when kSharedHinv
  // Coalesced loads: consecutive threads read consecutive columns of one row.
  for (int idx = t; idx < nrows * count; idx += kRows) {
    const int r = idx / count, j = idx % count;
    sw[j * kStride + r] = p.w[(r0 + r) * p.w_ld + p.begin + j];
  }
  if (kSharedHinv) {
    for (int idx = t; idx < count * count; idx += kRows) {
      shinv[idx] = p.hinv[(idx / count) * p.hinv_ld + idx % count];
    }
  }
  __syncthreads();
  const float maxq = static_cast<float>((1 << p.bits) - 1);
  if (t < nrows) {
    const long r = r0 + t;
    float loss = 0.0f;
    for (int i = 0; i < count; ++i) {
      const long c = p.begin + i;
      const long g = p.col_group[c];
      if (p.dynamic_groups && c % p.group_size == 0) {
        const long n = MinL(p.group_size, p.cols - c);
        GroupReader reader{sw, p.w + r * p.w_ld, p.begin, p.end, c, t};
        ComputeRowGridOf(reader, n, p.bits, p.sym, p.mse, &p.scales[g * p.rows + r],
                         &p.zeros[g * p.rows + r]);
      }
      const float scale = p.scales[g * p.rows + r], zero = p.zeros[g * p.rows + r];
      const float w = sw[i * kStride + t];
      const float code = QuantCode(w, scale, zero, maxq);
      const float q = Dequant(code, scale, zero);
      const float* hrow = kSharedHinv ? shinv + i * count : p.hinv + i * p.hinv_ld;
      const float e = (w - q) / hrow[i];
      loss += 0.5f * e * e;
      for (int j = i + 1; j < count; ++j) sw[j * kStride + t] -= e * hrow[j];
      sw[i * kStride + t] = q;
      serr[i * kStride + t] = e;
      p.codes[r * p.cols + c] = static_cast<int>(code);
    }
    p.loss[r] += loss;
  }
  __syncthreads();
  for (int idx = t; idx < nrows * count; idx += kRows) {
    const int r = idx / count, j = idx % count;
    p.w[(r0 + r) * p.w_ld + p.begin + j] = sw[j * kStride + r];
    p.err[(r0 + r) * p.err_ld + j] = serr[j * kStride + r];
  }
}

}  // namespace

cudaError_t LaunchGptqBlock(const GptqBlockParams& p, cudaStream_t stream) {
  const int count = static_cast<int>(p.end - p.begin);
  const size_t base = 2ull * count * kStride * sizeof(float);
  const size_t with_hinv = base + static_cast<size_t>(count) * count * sizeof(float);
  int device = 0, max_smem = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  const dim3 grid(static_cast<unsigned>((p.rows + kRows - 1) / kRows));
  if (with_hinv <= static_cast<size_t>(max_smem)) {
    cudaFuncSetAttribute(GptqBlockKernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(with_hinv));
    GptqBlockKernel<true><<<grid, kRows, with_hinv, stream>>>(p);
  } else {
    // Large blocks: the Hinv rows are read from global memory (every thread of a warp
    // reads the same address, a broadcast through L1).
    cudaFuncSetAttribute(GptqBlockKernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(base));
    GptqBlockKernel<false><<<grid, kRows, base, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace dgptq::kernels::cuda
