// The CUDA backend: cuBLAS (default math, no TF32) for GEMMs, cuSOLVER for the
// Cholesky factorisations, our kernels for the rest. One stream per backend; memory
// from the stream-ordered allocator.
#include <algorithm>
#include <memory>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "kernels/backend.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/forward.cuh"
#include "kernels/cuda/gptq_block.cuh"

namespace dgptq::kernels {
namespace {

class CudaBackend final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<Backend>> Create(int device) {
    auto b = std::unique_ptr<CudaBackend>(new CudaBackend());
    b->device_ = device;
    DGPTQ_CUDA_CHECK(cudaSetDevice(device));
    DGPTQ_CUDA_CHECK(cudaStreamCreateWithFlags(&b->stream_, cudaStreamNonBlocking));
    DGPTQ_CUDA_CHECK(cublasCreate(&b->blas_));
    DGPTQ_CUDA_CHECK(cublasSetStream(b->blas_, b->stream_));
    DGPTQ_CUDA_CHECK(cublasSetMathMode(b->blas_, CUBLAS_DEFAULT_MATH));
    DGPTQ_CUDA_CHECK(cusolverDnCreate(&b->solver_));
    DGPTQ_CUDA_CHECK(cusolverDnSetStream(b->solver_, b->stream_));
    // Keep freed memory in the pool: modules allocate and free the same sizes.
    cudaMemPool_t pool;
    DGPTQ_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t threshold = UINT64_MAX;
    DGPTQ_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    cudaDeviceProp prop;
    DGPTQ_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    b->gpu_name_ = prop.name;
    return std::unique_ptr<Backend>(std::move(b));
  }
  ~CudaBackend() override {
    if (solver_) cusolverDnDestroy(solver_);
    if (blas_) cublasDestroy(blas_);
    if (stream_) {
      cudaStreamSynchronize(stream_);
      cudaStreamDestroy(stream_);
    }
  }

  DeviceKind kind() const override { return DeviceKind::kCuda; }
  std::string name() const override { return absl::StrFormat("cuda:%d (%s)", device_, gpu_name_); }

  absl::StatusOr<Buffer> Allocate(size_t bytes) override {
    void* p = nullptr;
    const size_t n = bytes == 0 ? 16 : bytes;
    DGPTQ_CUDA_CHECK(cudaMallocAsync(&p, n, stream_));
    DGPTQ_CUDA_CHECK(cudaMemsetAsync(p, 0, n, stream_));
    cudaStream_t s = stream_;
    return Buffer(p, bytes, [s](void* q) { cudaFreeAsync(q, s); });
  }
  absl::Status Upload(const void* host, void* device, size_t bytes) override {
    DGPTQ_CUDA_CHECK(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream_));
    // Pageable sources may be reused by the caller as soon as we return.
    DGPTQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }
  absl::Status Download(const void* device, void* host, size_t bytes) override {
    DGPTQ_CUDA_CHECK(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream_));
    DGPTQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }
  absl::Status Copy(void* dst, const void* src, size_t bytes) override {
    DGPTQ_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
    return absl::OkStatus();
  }
  absl::Status Synchronize() override {
    DGPTQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }
  absl::Status AddF32ToF64(const float* src, double* dst, size_t n, bool assign) override {
    DGPTQ_CUDA_CHECK(cuda::LaunchAddF32ToF64(src, dst, n, assign, stream_));
    return absl::OkStatus();
  }
  absl::Status F64ToF32(const double* src, float* dst, size_t n) override {
    DGPTQ_CUDA_CHECK(cuda::LaunchF64ToF32(src, dst, n, stream_));
    return absl::OkStatus();
  }
  absl::Status ConvertToF32(DType t, const void* src, float* dst, size_t n) override {
    if (t == DType::kF32) return Copy(dst, src, n * sizeof(float));
    if (t != DType::kF16 && t != DType::kBF16) {
      return absl::InvalidArgumentError(
          absl::StrFormat("cannot convert %s to F32", DTypeName(t)));
    }
    DGPTQ_CUDA_CHECK(cuda::LaunchHalfToF32(t == DType::kBF16, src, dst, n, stream_));
    return absl::OkStatus();
  }

  absl::Status GemmBf16(bool ta, bool tb, float alpha, const Mat& a, const Mat& b, float beta,
                        const Mat& c) override;
  absl::Status Gemm(bool ta, bool tb, float alpha, const Mat& a, const Mat& b, float beta,
                    const Mat& c) override;
  absl::Status AccumulateHessian(const ActView& x, const Mat& h) override;
  absl::Status CholeskyInverseUpper(const Mat& h) override;

  absl::Status PrepareHessian(const Mat& h, const Mat& w, float scale) override {
    DGPTQ_RETURN_IF_ERROR(CheckSquare(h, "hessian"));
    DGPTQ_RETURN_IF_ERROR(CheckMat(w, "weight"));
    if (w.cols != h.rows) {
      return absl::InvalidArgumentError("weight columns do not match the Hessian");
    }
    DGPTQ_CUDA_CHECK(cuda::LaunchScaleSquare(h.data, h.rows, h.ld, scale, stream_));
    DGPTQ_CUDA_CHECK(cuda::LaunchDeadColumns(h.data, h.rows, h.ld, w.data, w.rows, w.ld, stream_));
    return absl::OkStatus();
  }
  absl::Status Dampen(const Mat& h, float percent) override {
    DGPTQ_RETURN_IF_ERROR(CheckSquare(h, "hessian"));
    DGPTQ_CUDA_CHECK(cuda::LaunchDampen(h.data, h.rows, h.ld, percent, stream_));
    return absl::OkStatus();
  }
  absl::Status ArgsortDiagDescending(const Mat& h, int32_t* perm) override {
    DGPTQ_RETURN_IF_ERROR(CheckSquare(h, "hessian"));
    DGPTQ_CUDA_CHECK(cuda::LaunchArgsortDiagDesc(h.data, h.rows, h.ld, perm, stream_));
    return absl::OkStatus();
  }
  absl::Status PermuteColumns(const Mat& src, const int32_t* perm, const Mat& dst) override {
    if (src.rows != dst.rows || src.cols != dst.cols) {
      return absl::InvalidArgumentError("permute: source and destination shapes differ");
    }
    DGPTQ_CUDA_CHECK(cuda::LaunchPermuteColumns(src.data, src.rows, src.cols, src.ld, perm,
                                                dst.data, dst.ld, stream_));
    return absl::OkStatus();
  }
  absl::Status PermuteSymmetric(const Mat& src, const int32_t* perm, const Mat& dst) override {
    DGPTQ_RETURN_IF_ERROR(CheckSquare(src, "hessian"));
    if (src.rows != dst.rows || src.cols != dst.cols) {
      return absl::InvalidArgumentError("permute: source and destination shapes differ");
    }
    DGPTQ_CUDA_CHECK(cuda::LaunchPermuteSymmetric(src.data, src.rows, src.ld, perm, dst.data,
                                                  dst.ld, stream_));
    return absl::OkStatus();
  }
  absl::Status PermuteColumnsI32(const int32_t* src, int64_t rows, int64_t cols,
                                 const int32_t* perm, int32_t* dst) override {
    DGPTQ_CUDA_CHECK(cuda::LaunchPermuteColumnsI32(src, rows, cols, perm, dst, stream_));
    return absl::OkStatus();
  }
  absl::Status ComputeGrid(const Mat& w, const GridSpec& g, float* scale, float* zero) override {
    DGPTQ_RETURN_IF_ERROR(CheckMat(w, "weight"));
    DGPTQ_CUDA_CHECK(cuda::LaunchComputeGrid(w.data, w.rows, w.cols, w.ld, g.bits, g.sym, g.mse,
                                             scale, zero, stream_));
    return absl::OkStatus();
  }
  absl::Status QuantizeRtn(const Mat& w, int bits, const int32_t* col_group, const float* scales,
                           const float* zeros, int32_t* codes) override {
    DGPTQ_RETURN_IF_ERROR(CheckMat(w, "weight"));
    DGPTQ_CUDA_CHECK(cuda::LaunchQuantizeRtn(w.data, w.rows, w.cols, w.ld, bits, col_group,
                                             scales, zeros, codes, stream_));
    return absl::OkStatus();
  }
  absl::Status Dequantize(const int32_t* codes, const int32_t* col_group, const float* scales,
                          const float* zeros, const Mat& w) override {
    DGPTQ_RETURN_IF_ERROR(CheckMat(w, "weight"));
    DGPTQ_CUDA_CHECK(cuda::LaunchDequantize(codes, w.rows, w.cols, col_group, scales, zeros,
                                            w.data, w.ld, stream_));
    return absl::OkStatus();
  }
  absl::Status GptqBlock(const GptqBlockArgs& a) override;
  absl::StatusOr<double> Sum(const float* x, size_t n) override {
    DGPTQ_ASSIGN_OR_RETURN(Buffer out, Allocate(sizeof(double)));
    DGPTQ_CUDA_CHECK(cuda::LaunchSum(x, n, static_cast<double*>(out.data()), stream_));
    double s = 0;
    DGPTQ_RETURN_IF_ERROR(Download(out.data(), &s, sizeof(s)));
    return s;
  }

  int64_t PeakDeviceBytes() override {
    cudaMemPool_t pool;
    uint64_t high = 0;
    if (cudaDeviceGetDefaultMemPool(&pool, device_) != cudaSuccess ||
        cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &high) != cudaSuccess) {
      return 0;
    }
    return static_cast<int64_t>(high);
  }
  absl::Status Embedding(const int32_t* ids, const Mat& table, const Mat& out) override {
    if (table.cols != out.cols) return absl::InvalidArgumentError("embedding: width mismatch");
    DGPTQ_CUDA_CHECK(cuda::LaunchEmbedding(ids, table.data, table.ld, out.rows, out.cols,
                                           out.data, out.ld, stream_));
    return absl::OkStatus();
  }
  absl::Status RmsNorm(const Mat& x, const float* w, float eps, const Mat& out) override {
    DGPTQ_CUDA_CHECK(cuda::LaunchNorm(false, x.data, x.ld, x.rows, x.cols, w, nullptr, eps,
                                      out.data, out.ld, stream_));
    return absl::OkStatus();
  }
  absl::Status LayerNorm(const Mat& x, const float* w, const float* b, float eps,
                         const Mat& out) override {
    DGPTQ_CUDA_CHECK(
        cuda::LaunchNorm(true, x.data, x.ld, x.rows, x.cols, w, b, eps, out.data, out.ld, stream_));
    return absl::OkStatus();
  }
  absl::Status AddBias(const Mat& x, const float* bias) override {
    return Elementwise(0, x, bias, 0, x);
  }
  absl::Status Add(const Mat& x, const Mat& y) override {
    if (x.rows != y.rows || x.cols != y.cols) return absl::InvalidArgumentError("add: shapes differ");
    return Elementwise(1, x, y.data, y.ld, x);
  }
  absl::Status SiluMul(const Mat& g, const Mat& u, const Mat& out) override {
    if (g.rows != u.rows || g.cols != u.cols) {
      return absl::InvalidArgumentError("silu_mul: shapes differ");
    }
    return Elementwise(2, g, u.data, u.ld, out);
  }
  absl::Status Relu(const Mat& x) override { return Elementwise(3, x, nullptr, 0, x); }
  absl::Status Rope(const Mat& x, int64_t heads, int64_t head_dim, int64_t seq_len,
                    const float* inv_freq) override {
    if (x.cols != heads * head_dim || head_dim % 2 != 0 || seq_len <= 0) {
      return absl::InvalidArgumentError("rope: bad head layout");
    }
    DGPTQ_CUDA_CHECK(cuda::LaunchRope(x.data, x.ld, x.rows, heads, head_dim, seq_len, inv_freq,
                                      stream_));
    return absl::OkStatus();
  }
  absl::Status Attention(const Mat& q, const Mat& k, const Mat& v, int64_t seq_len, int64_t heads,
                         int64_t kv_heads, int64_t head_dim, float scale, const Mat& out) override {
    if (seq_len <= 0 || seq_len > 8192 || q.rows % seq_len != 0 || q.cols != heads * head_dim ||
        k.cols != kv_heads * head_dim || v.cols != k.cols || kv_heads <= 0 ||
        heads % kv_heads != 0 || k.rows != q.rows || v.rows != q.rows) {
      return absl::InvalidArgumentError("attention: inconsistent shapes (or seq_len > 8192)");
    }
    DGPTQ_CUDA_CHECK(cuda::LaunchAttention(q.data, q.ld, k.data, k.ld, v.data, v.ld, q.rows,
                                           seq_len, heads, kv_heads, head_dim, scale, out.data,
                                           out.ld, stream_));
    return absl::OkStatus();
  }
  absl::Status CrossEntropy(const Mat& logits, const int32_t* targets, float* nll) override {
    DGPTQ_CUDA_CHECK(cuda::LaunchCrossEntropy(logits.data, logits.ld, logits.rows, logits.cols,
                                              targets, nll, stream_));
    return absl::OkStatus();
  }

 private:
  CudaBackend() = default;
  absl::Status Elementwise(int op, const Mat& x, const float* y, int64_t yld, const Mat& out) {
    DGPTQ_CUDA_CHECK(cuda::LaunchElementwise(op, x.data, x.ld, y, yld, x.rows, x.cols, out.data,
                                             out.ld, stream_));
    return absl::OkStatus();
  }
  // Checks a GEMM's shapes; *m, *n, *k of C [m, n] = op(A) [m, k] op(B) [k, n].
  static absl::Status GemmShape(bool ta, bool tb, const Mat& a, const Mat& b, const Mat& c,
                                int64_t* m, int64_t* n, int64_t* k);
  // A grow-only device buffer of at least `bytes`.
  absl::StatusOr<void*> Scratch(Buffer* buf, size_t bytes) {
    if (buf->bytes() < bytes) {
      buf->Reset();
      DGPTQ_ASSIGN_OR_RETURN(*buf, Allocate(bytes));
    }
    return buf->data();
  }
  int device_ = 0;
  Buffer bf16_a_, bf16_b_;  // GemmBf16's rounded operands
  std::string gpu_name_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  cusolverDnHandle_t solver_ = nullptr;
};

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
absl::Status CudaBackend::GemmShape(bool ta, bool tb, const Mat& a, const Mat& b, const Mat& c,
                                    int64_t* m, int64_t* n, int64_t* k) {
  DGPTQ_RETURN_IF_ERROR(CheckMat(a, "gemm A"));
  DGPTQ_RETURN_IF_ERROR(CheckMat(b, "gemm B"));
  DGPTQ_RETURN_IF_ERROR(CheckMat(c, "gemm C"));
  *m = ta ? a.cols : a.rows, *k = ta ? a.rows : a.cols;
  const int64_t kb = tb ? b.cols : b.rows;
  *n = tb ? b.rows : b.cols;
  if (*k != kb || c.rows != *m || c.cols != *n) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "gemm shapes disagree: op(A) [%d, %d], op(B) [%d, %d], C [%d, %d]", *m, *k, kb, *n,
        c.rows, c.cols));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::Gemm(bool ta, bool tb, float alpha, const Mat& a, const Mat& b,
                               float beta, const Mat& c) {
  int64_t m = 0, n = 0, k = 0;
  DGPTQ_RETURN_IF_ERROR(GemmShape(ta, tb, a, b, c, &m, &n, &k));
  if (m == 0 || n == 0) return absl::OkStatus();
  DGPTQ_CUDA_CHECK(cublasSgemm(blas_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                               n, m, k, &alpha, b.data, b.ld, a.data, a.ld, &beta, c.data, c.ld));
  return absl::OkStatus();
}

// The operands rounded into contiguous bf16 scratch (leading dimension = their cols), then
// the same operand swap as Gemm, on tensor cores with fp32 accumulation.
absl::Status CudaBackend::GemmBf16(bool ta, bool tb, float alpha, const Mat& a, const Mat& b,
                                   float beta, const Mat& c) {
  int64_t m = 0, n = 0, k = 0;
  DGPTQ_RETURN_IF_ERROR(GemmShape(ta, tb, a, b, c, &m, &n, &k));
  if (m == 0 || n == 0) return absl::OkStatus();
  DGPTQ_ASSIGN_OR_RETURN(void* ab, Scratch(&bf16_a_, std::max<size_t>(2, a.rows * a.cols * 2)));
  DGPTQ_ASSIGN_OR_RETURN(void* bb, Scratch(&bf16_b_, std::max<size_t>(2, b.rows * b.cols * 2)));
  DGPTQ_CUDA_CHECK(cuda::LaunchF32ToBf16(a.data, a.rows, a.cols, a.ld, ab, stream_));
  DGPTQ_CUDA_CHECK(cuda::LaunchF32ToBf16(b.data, b.rows, b.cols, b.ld, bb, stream_));
  const int64_t lda = std::max<int64_t>(1, a.cols), ldb = std::max<int64_t>(1, b.cols);
  DGPTQ_CUDA_CHECK(cublasGemmEx(blas_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                n, m, k, &alpha, bb, CUDA_R_16BF, ldb, ab, CUDA_R_16BF, lda, &beta,
                                c.data, CUDA_R_32F, c.ld, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

// Row-major X [n, cols] is column-major X^T [cols, n]: H = (X^T)(X^T)^T.
absl::Status CudaBackend::AccumulateHessian(const ActView& x, const Mat& h) {
  DGPTQ_RETURN_IF_ERROR(CheckSquare(h, "hessian"));
  if (h.rows != x.cols || x.ld < x.cols || !IsFloat(x.dtype)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "hessian [%d, %d] does not match activations [%d, %d] of %s", h.rows, h.cols, x.rows,
        x.cols, DTypeName(x.dtype)));
  }
  if (x.rows == 0) return absl::OkStatus();
  const cudaDataType t = x.dtype == DType::kF32   ? CUDA_R_32F
                         : x.dtype == DType::kF16 ? CUDA_R_16F
                                                  : CUDA_R_16BF;
  const float one = 1.0f;
  DGPTQ_CUDA_CHECK(cublasGemmEx(blas_, CUBLAS_OP_N, CUBLAS_OP_T, x.cols, x.cols, x.rows, &one,
                                x.data, t, x.ld, x.data, t, x.ld, &one, h.data, CUDA_R_32F, h.ld,
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

// H is symmetric, so its row-major storage is also its column-major one. Lower
// Cholesky + inverse + lower Cholesky of the inverse in column-major; read back
// row-major, that lower factor L is U = L^T with U^T U = H^-1.
absl::Status CudaBackend::CholeskyInverseUpper(const Mat& h) {
  DGPTQ_RETURN_IF_ERROR(CheckSquare(h, "hessian"));
  const int n = static_cast<int>(h.rows), ld = static_cast<int>(h.ld);
  if (n == 0) return absl::OkStatus();
  const cublasFillMode_t lower = CUBLAS_FILL_MODE_LOWER;
  int lwork = 0, lwork2 = 0;
  DGPTQ_CUDA_CHECK(cusolverDnSpotrf_bufferSize(solver_, lower, n, h.data, ld, &lwork));
  DGPTQ_CUDA_CHECK(cusolverDnSpotri_bufferSize(solver_, lower, n, h.data, ld, &lwork2));
  DGPTQ_ASSIGN_OR_RETURN(Buffer work, Allocate(sizeof(float) * std::max(lwork, lwork2)));
  DGPTQ_ASSIGN_OR_RETURN(Buffer info, Allocate(3 * sizeof(int)));
  int* dinfo = static_cast<int*>(info.data());
  DGPTQ_CUDA_CHECK(cusolverDnSpotrf(solver_, lower, n, h.data, ld, work.f32(), lwork, dinfo));
  DGPTQ_CUDA_CHECK(cusolverDnSpotri(solver_, lower, n, h.data, ld, work.f32(), lwork2, dinfo + 1));
  DGPTQ_CUDA_CHECK(cuda::LaunchMirrorLower(h.data, n, ld, stream_));
  DGPTQ_CUDA_CHECK(cusolverDnSpotrf(solver_, lower, n, h.data, ld, work.f32(), lwork, dinfo + 2));
  DGPTQ_CUDA_CHECK(cuda::LaunchZeroStrictLower(h.data, n, ld, stream_));
  int host_info[3];
  DGPTQ_RETURN_IF_ERROR(Download(dinfo, host_info, sizeof(host_info)));
  if (host_info[0] != 0 || host_info[1] != 0 || host_info[2] != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "Hessian is not positive definite (cuSOLVER info %d/%d/%d)", host_info[0], host_info[1],
        host_info[2]));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::GptqBlock(const GptqBlockArgs& a) {
  DGPTQ_RETURN_IF_ERROR(CheckMat(a.w, "weight"));
  DGPTQ_RETURN_IF_ERROR(CheckSquare(a.hinv, "hinv block"));
  if (a.begin < 0 || a.end > a.w.cols || a.begin >= a.end || a.hinv.rows != a.end - a.begin ||
      a.err.rows != a.w.rows || a.err.cols < a.end - a.begin || a.end - a.begin > 512) {
    return absl::InvalidArgumentError("gptq block: inconsistent block bounds or shapes");
  }
  cuda::GptqBlockParams p{a.w.data, a.w.ld, a.w.rows, a.w.cols, a.hinv.data, a.hinv.ld,
                          a.begin, a.end, a.grid.bits, a.grid.sym, a.grid.mse, a.group_size,
                          a.dynamic_groups, a.col_group, a.scales, a.zeros, a.codes,
                          a.err.data, a.err.ld, a.loss};
  DGPTQ_CUDA_CHECK(cuda::LaunchGptqBlock(p, stream_));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device) {
  if (!CudaAvailable()) {
    return absl::UnavailableError("no CUDA device is available; use --device cpu");
  }
  return CudaBackend::Create(device);
}

bool CudaAvailable() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

}  // namespace dgptq::kernels
