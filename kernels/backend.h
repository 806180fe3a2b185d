// The compute backend: one interface, implemented on the CPU (kernels/cpu, OpenBLAS +
// LAPACK + threads) and on CUDA (kernels/cuda, cuBLAS + cuSOLVER + our kernels).
//
// Conventions for every operation:
// - Row-major. A weight is W[rows = out_features, cols = in_features]; a Hessian is
//   H[cols, cols]. `Mat` is a 2-D fp32 view with a leading dimension (elements).
// - All pointers passed to a backend live on that backend's device (see Allocate).
// - Operations are issued in order on the backend's stream; Download/Synchronize
//   wait. Returned statuses: InvalidArgument for shape/dtype misuse (a bug in the
//   caller, reported rather than crashed on), FailedPrecondition for numerical
//   failure (a matrix that is not positive definite), ResourceExhausted when the
//   device is out of memory, Internal for library errors.
// - Not thread-safe: one backend object per thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/dtype.h"

namespace dgptq::kernels {

enum class DeviceKind { kCpu, kCuda };

// Parses "cpu" / "cuda"; InvalidArgument otherwise.
absl::StatusOr<DeviceKind> ParseDeviceKind(const std::string& name);

// An owned allocation on a backend's device. Move-only.
class Buffer {
 public:
  Buffer() = default;
  Buffer(void* data, size_t bytes, std::function<void(void*)> free)
      : data_(data), bytes_(bytes), free_(std::move(free)) {}
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept;
  ~Buffer() { Reset(); }
  void Reset();

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  float* f32() const { return static_cast<float*>(data_); }
  int32_t* i32() const { return static_cast<int32_t*>(data_); }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  std::function<void(void*)> free_;
};

// Non-owning 2-D fp32 view, row-major with leading dimension `ld` >= cols.
struct Mat {
  float* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t ld = 0;
  Mat Block(int64_t r0, int64_t c0, int64_t nr, int64_t nc) const {
    return Mat{data + r0 * ld + c0, nr, nc, ld};
  }
};

// InvalidArgument naming `what` when a view is malformed (negative sizes, ld < cols,
// null data) or, for CheckSquare, not square. Shared by the backends' shape checks.
absl::Status CheckMat(const Mat& m, const char* what);
absl::Status CheckSquare(const Mat& m, const char* what);

// Non-owning 2-D view of calibration activations in any float dtype.
struct ActView {
  const void* data = nullptr;
  DType dtype = DType::kF32;  // kF32, kF16 or kBF16
  int64_t rows = 0;           // tokens
  int64_t cols = 0;           // features
  int64_t ld = 0;
};

// The quantization grid (see DESIGN.md "The grid").
struct GridSpec {
  int bits = 4;
  bool sym = true;
  bool mse = false;
};

// Arguments of one lazy-batch block of GPTQ (GPTQ Alg. 1, inner loop), for the
// columns [begin, end) of W, all rows independently. For each column c in order:
//   - if `dynamic_groups` and c % group_size == 0 (or c == 0 for per-channel with
//     group_size <= 0 — not used: per-channel grids are computed up front), the grid of
//     group c / group_size is computed from W[:, c : min(c + group_size, cols)] as it
//     is now, into scales/zeros[group, :];
//   - q = quantize(W[:, c]) with the grid of group col_group[c];
//   - err = (W[:, c] - q) / hinv[c - begin, c - begin]; loss += (W[:, c] - q)^2 / d^2 / 2;
//   - W[:, c+1 : end] -= err x hinv[c - begin, c+1-begin : end-begin];
//   - W[:, c] = q, codes[:, c] = the integer code, err_out[:, c - begin] = err.
// Precondition (arranged by the caller): a group that starts after `begin` ends at or
// before `end`, so all of its columns are fully updated when its grid is computed.
struct GptqBlockArgs {
  Mat w;             // [rows, cols], updated in place
  Mat hinv;          // [end-begin, end-begin] block of the upper Cholesky factor of H^-1
  int64_t begin = 0;
  int64_t end = 0;
  GridSpec grid;
  int group_size = -1;
  bool dynamic_groups = false;
  const int32_t* col_group = nullptr;  // [cols] group of each column
  float* scales = nullptr;             // [groups, rows]
  float* zeros = nullptr;              // [groups, rows]
  int32_t* codes = nullptr;            // [rows, cols] (row-major, ld = cols)
  Mat err;                             // [rows, end-begin]
  float* loss = nullptr;               // [rows], accumulated
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual DeviceKind kind() const = 0;
  virtual std::string name() const = 0;

  // Memory. Allocate returns zeroed memory; ResourceExhausted when out of memory.
  virtual absl::StatusOr<Buffer> Allocate(size_t bytes) = 0;
  virtual absl::Status Upload(const void* host, void* device, size_t bytes) = 0;
  virtual absl::Status Download(const void* device, void* host, size_t bytes) = 0;
  virtual absl::Status Synchronize() = 0;
  // Device-to-device copy (regions must not overlap).
  virtual absl::Status Copy(void* dst, const void* src, size_t bytes) = 0;
  // dst[i] = float(src[i]) for n elements of float dtype `src_type` (device memory).
  virtual absl::Status ConvertToF32(DType src_type, const void* src, float* dst, size_t n) = 0;

  // C = alpha * op(A) * op(B) + beta * C, fp32 with fp32 accumulation (no TF32).
  virtual absl::Status Gemm(bool trans_a, bool trans_b, float alpha, const Mat& a, const Mat& b,
                            float beta, const Mat& c) = 0;
  // The same with both operands rounded to bf16 (round to nearest even) and the products
  // accumulated in fp32: tensor cores on CUDA, emulated on the CPU (the operands rounded
  // into scratch, then Gemm), so the two compute the same thing. For the model forward and
  // the Hessian products of a bf16 model, as DESIGN.md's performance model counts them;
  // never for GPTQ's own updates.
  virtual absl::Status GemmBf16(bool trans_a, bool trans_b, float alpha, const Mat& a,
                                const Mat& b, float beta, const Mat& c) = 0;
  // H += X^T X with fp32 accumulation. H is [x.cols, x.cols]; a sum, never a mean.
  virtual absl::Status AccumulateHessian(const ActView& x, const Mat& h) = 0;
  // dst[i] = (assign ? 0 : dst[i]) + double(src[i]) for n elements (device memory):
  // Hessian sums kept in fp64.
  virtual absl::Status AddF32ToF64(const float* src, double* dst, size_t n, bool assign) = 0;
  // dst[i] = float(src[i]) (round to nearest) for n elements (device memory).
  virtual absl::Status F64ToF32(const double* src, float* dst, size_t n) = 0;
  // h <- U, the upper Cholesky factor of h^-1 (h^-1 = U^T U), lower triangle zeroed.
  // FailedPrecondition when h is not positive definite (h is then garbage).
  virtual absl::Status CholeskyInverseUpper(const Mat& h) = 0;

  // GPTQ preparation on H [n, n] and W [rows, n]: h *= scale; then for every dead
  // column i (h[i,i] == 0): h[i,i] = 1 and w[:, i] = 0.
  virtual absl::Status PrepareHessian(const Mat& h, const Mat& w, float scale) = 0;
  // h += percent * mean(diag(h)) * I.
  virtual absl::Status Dampen(const Mat& h, float percent) = 0;
  // perm: the column order by descending diag(h), ties by index (a stable sort).
  virtual absl::Status ArgsortDiagDescending(const Mat& h, int32_t* perm) = 0;
  // dst[:, j] = src[:, perm[j]] (dst must not alias src).
  virtual absl::Status PermuteColumns(const Mat& src, const int32_t* perm, const Mat& dst) = 0;
  // dst[i, j] = src[perm[i], perm[j]].
  virtual absl::Status PermuteSymmetric(const Mat& src, const int32_t* perm, const Mat& dst) = 0;
  // Same for int32 codes [rows, cols] (ld = cols).
  virtual absl::Status PermuteColumnsI32(const int32_t* src, int64_t rows, int64_t cols,
                                         const int32_t* perm, int32_t* dst) = 0;

  // Grid of each row of w (one group): scale[r], zero[r].
  virtual absl::Status ComputeGrid(const Mat& w, const GridSpec& grid, float* scale,
                                   float* zero) = 0;
  // Round to nearest on given grids: for each (r, c), g = col_group[c]:
  // codes[r, c] = clamp(rint(w / scales[g, r]) + zeros[g, r]); w[r, c] <- dequantized.
  virtual absl::Status QuantizeRtn(const Mat& w, int bits, const int32_t* col_group,
                                   const float* scales, const float* zeros, int32_t* codes) = 0;
  // The inverse, from stored codes: w[r, c] = scales[g, r] * (codes[r, c] - zeros[g, r]) with
  // g = col_group[c], exactly as QuantizedWeight::Dequantize computes it on the host
  // (codes [rows, cols] with ld = cols).
  virtual absl::Status Dequantize(const int32_t* codes, const int32_t* col_group,
                                  const float* scales, const float* zeros, const Mat& w) = 0;
  virtual absl::Status GptqBlock(const GptqBlockArgs& args) = 0;
  // Peak bytes of device memory in use since the backend was made: on CUDA the device
  // memory pool's high-water mark, on the CPU the peak of the memory held in Buffers from
  // Allocate (the "device" is host memory there; it is also part of the peak RSS).
  virtual int64_t PeakDeviceBytes() = 0;
  // Sum of n floats, returned to the host.
  virtual absl::StatusOr<double> Sum(const float* x, size_t n) = 0;

  // ---- Model forward. Activations are fp32 [tokens, features]; the tokens of a
  // batch are windows of `seq_len` consecutive rows (row r is position r % seq_len).
  // out[r, :] = table[ids[r], :]; InvalidArgument never checked per id: ids must be
  // validated by the caller (they are, when tokens are loaded).
  virtual absl::Status Embedding(const int32_t* ids, const Mat& table, const Mat& out) = 0;
  // out = x / sqrt(mean(x^2) + eps) * weight (per row; out may alias x).
  virtual absl::Status RmsNorm(const Mat& x, const float* weight, float eps, const Mat& out) = 0;
  // out = (x - mean) / sqrt(var + eps) * weight + bias (out may alias x).
  virtual absl::Status LayerNorm(const Mat& x, const float* weight, const float* bias, float eps,
                                 const Mat& out) = 0;
  // x[r, :] += bias.
  virtual absl::Status AddBias(const Mat& x, const float* bias) = 0;
  // x += y.
  virtual absl::Status Add(const Mat& x, const Mat& y) = 0;
  // out = silu(gate) * up (out may alias gate).
  virtual absl::Status SiluMul(const Mat& gate, const Mat& up, const Mat& out) = 0;
  virtual absl::Status Relu(const Mat& x) = 0;
  // Rotary embedding in place on x [tokens, heads * head_dim] (Hugging Face
  // rotate_half layout): for i < head_dim / 2, angle = (r % seq_len) * inv_freq[i].
  virtual absl::Status Rope(const Mat& x, int64_t heads, int64_t head_dim, int64_t seq_len,
                            const float* inv_freq) = 0;
  // Causal softmax(q k^T * scale) v within each window; grouped-query heads (q head
  // h reads kv head h / (heads / kv_heads)). q, out [tokens, heads * head_dim];
  // k, v [tokens, kv_heads * head_dim].
  virtual absl::Status Attention(const Mat& q, const Mat& k, const Mat& v, int64_t seq_len,
                                 int64_t heads, int64_t kv_heads, int64_t head_dim, float scale,
                                 const Mat& out) = 0;
  // nll[r] = logsumexp(logits[r, :]) - logits[r, targets[r]]; 0 where targets[r] < 0.
  virtual absl::Status CrossEntropy(const Mat& logits, const int32_t* targets, float* nll) = 0;
};

// A new buffer on `backend`'s device holding a copy of `bytes` bytes of host memory.
absl::StatusOr<Buffer> UploadNew(Backend& backend, const void* host, size_t bytes);
// C = alpha op(A) op(B) + beta C: Backend::Gemm, or with `bf16` Backend::GemmBf16.
absl::Status GemmIn(Backend& backend, bool bf16, bool trans_a, bool trans_b, float alpha,
                    const Mat& a, const Mat& b, float beta, const Mat& c);

// The CPU backend with `threads` workers (0: all cores).
std::unique_ptr<Backend> MakeCpuBackend(int threads = 0);
// The CUDA backend on `device`; Unavailable when built without CUDA or no GPU exists.
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device = 0);
// Either of the above (`cpu_threads` for the CPU backend, `gpu` for CUDA).
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(DeviceKind kind, int cpu_threads = 0,
                                                     int gpu = 0);
// True when a CUDA device is usable in this process.
bool CudaAvailable();

}  // namespace dgptq::kernels
