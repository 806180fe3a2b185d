// The CPU backend: OpenBLAS for GEMM, LAPACK for Cholesky, std::thread over rows for
// the element-wise and GPTQ block work. "Device" memory is host memory.
#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "kernels/backend.h"
#include "kernels/cpu/forward.h"
#include "kernels/cpu/parallel.h"
#include "kernels/quant_math.h"

namespace dgptq::kernels {
namespace {

using cpu::ParallelFor;

class CpuBackend final : public Backend {
 public:
  // OpenBLAS runs single-threaded inside our own row partitions: its idle worker
  // threads would otherwise spin (sched_yield) against ours.
  explicit CpuBackend(int threads)
      : threads_(threads > 0 ? threads
                             : std::max(1u, std::thread::hardware_concurrency())) {
    openblas_set_num_threads(1);
  }

  DeviceKind kind() const override { return DeviceKind::kCpu; }
  std::string name() const override { return absl::StrFormat("cpu(%d threads)", threads_); }

  absl::StatusOr<Buffer> Allocate(size_t bytes) override {
    const size_t rounded = std::max<size_t>(64, (bytes + 63) / 64 * 64);
    void* p = std::aligned_alloc(64, rounded);
    if (p == nullptr) {
      return absl::ResourceExhaustedError(absl::StrFormat("cannot allocate %d bytes", bytes));
    }
    std::memset(p, 0, rounded);
    const int64_t now = usage_->now += static_cast<int64_t>(rounded);
    int64_t peak = usage_->peak.load();
    while (now > peak && !usage_->peak.compare_exchange_weak(peak, now)) {
    }
    // The counters outlive the backend if a buffer does.
    return Buffer(p, bytes, [u = usage_, rounded](void* q) {
      u->now -= static_cast<int64_t>(rounded);
      std::free(q);
    });
  }
  int64_t PeakDeviceBytes() override { return usage_->peak.load(); }
  absl::Status GemmBf16(bool ta, bool tb, float alpha, const Mat& a, const Mat& b, float beta,
                        const Mat& c) override {
    DGPTQ_RETURN_IF_ERROR(CheckMat(a, "gemm A"));
    DGPTQ_RETURN_IF_ERROR(CheckMat(b, "gemm B"));
    std::vector<float> ra(a.rows * a.cols), rb(b.rows * b.cols);
    RoundToBf16(a, ra.data());
    RoundToBf16(b, rb.data());
    return Gemm(ta, tb, alpha, Mat{ra.data(), a.rows, a.cols, a.cols},
                Mat{rb.data(), b.rows, b.cols, b.cols}, beta, c);
  }
  absl::Status Upload(const void* host, void* device, size_t bytes) override {
    if (bytes > 0) std::memcpy(device, host, bytes);
    return absl::OkStatus();
  }
  absl::Status Download(const void* device, void* host, size_t bytes) override {
    if (bytes > 0) std::memcpy(host, device, bytes);
    return absl::OkStatus();
  }
  absl::Status Copy(void* dst, const void* src, size_t bytes) override {
    if (bytes > 0) std::memmove(dst, src, bytes);
    return absl::OkStatus();
  }
  absl::Status Synchronize() override { return absl::OkStatus(); }
  absl::Status ConvertToF32(DType src_type, const void* src, float* dst, size_t n) override {
    if (!IsFloat(src_type)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("cannot convert %s to F32", DTypeName(src_type)));
    }
    dgptq::ConvertToF32(src_type, src, dst, n);
    return absl::OkStatus();
  }

  absl::Status AddF32ToF64(const float* src, double* dst, size_t n, bool assign) override {
    if (assign) {
      for (size_t i = 0; i < n; ++i) dst[i] = static_cast<double>(src[i]);
    } else {
      for (size_t i = 0; i < n; ++i) dst[i] += static_cast<double>(src[i]);
    }
    return absl::OkStatus();
  }
  absl::Status F64ToF32(const double* src, float* dst, size_t n) override {
    for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
    return absl::OkStatus();
  }

  absl::Status Gemm(bool ta, bool tb, float alpha, const Mat& a, const Mat& b, float beta,
                    const Mat& c) override {
    DGPTQ_RETURN_IF_ERROR(CheckMat(a, "gemm A"));
    DGPTQ_RETURN_IF_ERROR(CheckMat(b, "gemm B"));
    DGPTQ_RETURN_IF_ERROR(CheckMat(c, "gemm C"));
    const int64_t m = ta ? a.cols : a.rows, k = ta ? a.rows : a.cols;
    const int64_t kb = tb ? b.cols : b.rows, n = tb ? b.rows : b.cols;
    if (k != kb || c.rows != m || c.cols != n) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "gemm shapes disagree: op(A) [%d, %d], op(B) [%d, %d], C [%d, %d]", m, k, kb, n,
          c.rows, c.cols));
    }
    if (m == 0 || n == 0) return absl::OkStatus();
    // Rows of C in parallel; row r of op(A) is row r of A, or column r when transposed.
    ParallelFor(m, threads_, 32, [&](int64_t r0, int64_t r1) {
      const float* a0 = ta ? a.data + r0 : a.data + r0 * a.ld;
      cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                  r1 - r0, n, k, alpha, a0, a.ld, b.data, b.ld, beta, c.data + r0 * c.ld, c.ld);
    });
    return absl::OkStatus();
  }

  absl::Status AccumulateHessian(const ActView& x, const Mat& h) override {
    DGPTQ_RETURN_IF_ERROR(CheckSquare(h, "hessian"));
    if (h.rows != x.cols || x.ld < x.cols || !IsFloat(x.dtype)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "hessian [%d, %d] does not match activations [%d, %d] of %s", h.rows, h.cols, x.rows,
          x.cols, DTypeName(x.dtype)));
    }
    // Convert chunks of rows to fp32 and accumulate X^T X (fp32 accumulate in BLAS).
    constexpr int64_t kChunk = 1024;
    std::vector<float> buf;
    const size_t esize = DTypeSize(x.dtype);
    for (int64_t r0 = 0; r0 < x.rows; r0 += kChunk) {
      const int64_t nr = std::min(kChunk, x.rows - r0);
      const float* src;
      int64_t ld = x.ld;
      if (x.dtype == DType::kF32) {
        src = static_cast<const float*>(x.data) + r0 * x.ld;
      } else {
        buf.resize(nr * x.cols);
        for (int64_t r = 0; r < nr; ++r) {
          const auto* row = static_cast<const uint8_t*>(x.data) + (r0 + r) * x.ld * esize;
          dgptq::ConvertToF32(x.dtype, row, buf.data() + r * x.cols, x.cols);
        }
        src = buf.data();
        ld = x.cols;
      }
      // Rows [i0, i1) of H = columns [i0, i1) of X, transposed, times X.
      ParallelFor(x.cols, threads_, 32, [&](int64_t i0, int64_t i1) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, i1 - i0, x.cols, nr, 1.0f, src + i0,
                    ld, src, ld, 1.0f, h.data + i0 * h.ld, h.ld);
      });
    }
    return absl::OkStatus();
  }

  absl::Status CholeskyInverseUpper(const Mat& h) override {
    DGPTQ_RETURN_IF_ERROR(CheckSquare(h, "hessian"));
    const lapack_int n = h.rows, ld = h.ld;
    if (n == 0) return absl::OkStatus();
    // LAPACK may use all our threads here; nothing else of ours runs meanwhile.
    openblas_set_num_threads(threads_);
    struct Restore {
      ~Restore() { openblas_set_num_threads(1); }
    } restore;
    lapack_int info = LAPACKE_spotrf(LAPACK_ROW_MAJOR, 'L', n, h.data, ld);
    if (info == 0) info = LAPACKE_spotri(LAPACK_ROW_MAJOR, 'L', n, h.data, ld);
    if (info != 0) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "Hessian is not positive definite (LAPACK info %d)", static_cast<int>(info)));
    }
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < i; ++j) h.data[j * ld + i] = h.data[i * ld + j];
    }
    info = LAPACKE_spotrf(LAPACK_ROW_MAJOR, 'U', n, h.data, ld);
    if (info != 0) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "inverse Hessian is not positive definite (LAPACK info %d)", static_cast<int>(info)));
    }
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < i; ++j) h.data[i * ld + j] = 0.0f;
    }
    return absl::OkStatus();
  }

  absl::Status PrepareHessian(const Mat& h, const Mat& w, float scale) override {
    DGPTQ_RETURN_IF_ERROR(CheckSquare(h, "hessian"));
    DGPTQ_RETURN_IF_ERROR(CheckMat(w, "weight"));
    if (w.cols != h.rows) {
      return absl::InvalidArgumentError("weight columns do not match the Hessian");
    }
    ParallelFor(h.rows, threads_, 64, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        for (int64_t j = 0; j < h.cols; ++j) h.data[i * h.ld + j] *= scale;
      }
    });
    for (int64_t i = 0; i < h.rows; ++i) {
      if (h.data[i * h.ld + i] != 0.0f) continue;
      h.data[i * h.ld + i] = 1.0f;
      for (int64_t r = 0; r < w.rows; ++r) w.data[r * w.ld + i] = 0.0f;
    }
    return absl::OkStatus();
  }

  absl::Status Dampen(const Mat& h, float percent) override {
    DGPTQ_RETURN_IF_ERROR(CheckSquare(h, "hessian"));
    double sum = 0;
    for (int64_t i = 0; i < h.rows; ++i) sum += h.data[i * h.ld + i];
    const float add = static_cast<float>(percent * (sum / std::max<int64_t>(1, h.rows)));
    for (int64_t i = 0; i < h.rows; ++i) h.data[i * h.ld + i] += add;
    return absl::OkStatus();
  }

  absl::Status ArgsortDiagDescending(const Mat& h, int32_t* perm) override {
    DGPTQ_RETURN_IF_ERROR(CheckSquare(h, "hessian"));
    std::iota(perm, perm + h.rows, 0);
    std::stable_sort(perm, perm + h.rows, [&](int32_t a, int32_t b) {
      return h.data[a * h.ld + a] > h.data[b * h.ld + b];
    });
    return absl::OkStatus();
  }

  absl::Status PermuteColumns(const Mat& src, const int32_t* perm, const Mat& dst) override {
    if (src.rows != dst.rows || src.cols != dst.cols) {
      return absl::InvalidArgumentError("permute: source and destination shapes differ");
    }
    ParallelFor(src.rows, threads_, 16, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        for (int64_t j = 0; j < src.cols; ++j) dst.data[r * dst.ld + j] = src.data[r * src.ld + perm[j]];
      }
    });
    return absl::OkStatus();
  }

  absl::Status PermuteSymmetric(const Mat& src, const int32_t* perm, const Mat& dst) override {
    DGPTQ_RETURN_IF_ERROR(CheckSquare(src, "hessian"));
    if (dst.rows != src.rows || dst.cols != src.cols) {
      return absl::InvalidArgumentError("permute: source and destination shapes differ");
    }
    ParallelFor(src.rows, threads_, 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const float* row = src.data + perm[i] * src.ld;
        for (int64_t j = 0; j < src.cols; ++j) dst.data[i * dst.ld + j] = row[perm[j]];
      }
    });
    return absl::OkStatus();
  }

  absl::Status PermuteColumnsI32(const int32_t* src, int64_t rows, int64_t cols,
                                 const int32_t* perm, int32_t* dst) override {
    ParallelFor(rows, threads_, 16, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        for (int64_t j = 0; j < cols; ++j) dst[r * cols + j] = src[r * cols + perm[j]];
      }
    });
    return absl::OkStatus();
  }

  absl::Status ComputeGrid(const Mat& w, const GridSpec& grid, float* scale,
                           float* zero) override {
    DGPTQ_RETURN_IF_ERROR(CheckMat(w, "weight"));
    ParallelFor(w.rows, threads_, 16, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        ComputeRowGrid(w.data + r * w.ld, w.cols, 1, grid.bits, grid.sym, grid.mse, &scale[r],
                       &zero[r]);
      }
    });
    return absl::OkStatus();
  }

  absl::Status QuantizeRtn(const Mat& w, int bits, const int32_t* col_group, const float* scales,
                           const float* zeros, int32_t* codes) override {
    DGPTQ_RETURN_IF_ERROR(CheckMat(w, "weight"));
    const float maxq = static_cast<float>((1 << bits) - 1);
    ParallelFor(w.rows, threads_, 16, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        for (int64_t c = 0; c < w.cols; ++c) {
          const int64_t g = col_group[c] * w.rows + r;
          const float q = QuantCode(w.data[r * w.ld + c], scales[g], zeros[g], maxq);
          codes[r * w.cols + c] = static_cast<int32_t>(q);
          w.data[r * w.ld + c] = Dequant(q, scales[g], zeros[g]);
        }
      }
    });
    return absl::OkStatus();
  }

  absl::Status Dequantize(const int32_t* codes, const int32_t* col_group, const float* scales,
                          const float* zeros, const Mat& w) override {
    DGPTQ_RETURN_IF_ERROR(CheckMat(w, "weight"));
    ParallelFor(w.rows, threads_, 16, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        for (int64_t c = 0; c < w.cols; ++c) {
          const int64_t g = col_group[c] * w.rows + r;
          w.data[r * w.ld + c] = Dequant(static_cast<float>(codes[r * w.cols + c]), scales[g], zeros[g]);
        }
      }
    });
    return absl::OkStatus();
  }
  absl::Status GptqBlock(const GptqBlockArgs& a) override;

  absl::StatusOr<double> Sum(const float* x, size_t n) override {
    double s = 0;
    for (size_t i = 0; i < n; ++i) s += x[i];
    return s;
  }

  absl::Status Embedding(const int32_t* ids, const Mat& table, const Mat& out) override {
    return cpu::Embedding(threads_, ids, table, out);
  }
  absl::Status RmsNorm(const Mat& x, const float* w, float eps, const Mat& out) override {
    return cpu::RmsNorm(threads_, x, w, eps, out);
  }
  absl::Status LayerNorm(const Mat& x, const float* w, const float* b, float eps,
                         const Mat& out) override {
    return cpu::LayerNorm(threads_, x, w, b, eps, out);
  }
  absl::Status AddBias(const Mat& x, const float* bias) override {
    return cpu::AddBias(threads_, x, bias);
  }
  absl::Status Add(const Mat& x, const Mat& y) override { return cpu::Add(threads_, x, y); }
  absl::Status SiluMul(const Mat& g, const Mat& u, const Mat& out) override {
    return cpu::SiluMul(threads_, g, u, out);
  }
  absl::Status Relu(const Mat& x) override { return cpu::Relu(threads_, x); }
  absl::Status Rope(const Mat& x, int64_t heads, int64_t head_dim, int64_t seq_len,
                    const float* inv_freq) override {
    return cpu::Rope(threads_, x, heads, head_dim, seq_len, inv_freq);
  }
  absl::Status Attention(const Mat& q, const Mat& k, const Mat& v, int64_t seq_len, int64_t heads,
                         int64_t kv_heads, int64_t head_dim, float scale, const Mat& out) override {
    return cpu::Attention(threads_, q, k, v, seq_len, heads, kv_heads, head_dim, scale, out);
  }
  absl::Status CrossEntropy(const Mat& logits, const int32_t* targets, float* nll) override {
    return cpu::CrossEntropy(threads_, logits, targets, nll);
  }

 private:
  // dst [m.rows, m.cols] (contiguous) = m with every value rounded to bf16, kept in fp32.
  void RoundToBf16(const Mat& m, float* dst) const {
    ParallelFor(m.rows, threads_, 16, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        for (int64_t col = 0; col < m.cols; ++col) {
          dst[r * m.cols + col] = BFloat16ToFloat(FloatToBFloat16(m.data[r * m.ld + col]));
        }
      }
    });
  }
  struct Usage {
    std::atomic<int64_t> now{0}, peak{0};
  };
  int threads_;
  std::shared_ptr<Usage> usage_ = std::make_shared<Usage>();
};

// GPTQ Alg. 1 inner loop for rows [r0, r1): quantize column by column and spread each
// column's error over the rest of the block (the lazy batch defers the columns after it).
void GptqBlockRows(const GptqBlockArgs& a, int64_t r0, int64_t r1) {
  const float maxq = static_cast<float>((1 << a.grid.bits) - 1);
  const int64_t rows = a.w.rows, cols = a.w.cols, count = a.end - a.begin;
  for (int64_t r = r0; r < r1; ++r) {
    float* w = a.w.data + r * a.w.ld;
    float* err = a.err.data + r * a.err.ld;
    double loss = 0;
    for (int64_t i = 0; i < count; ++i) {
      const int64_t c = a.begin + i;
      const int64_t g = a.col_group[c];
      if (a.dynamic_groups && c % a.group_size == 0) {
        const int64_t n = std::min<int64_t>(a.group_size, cols - c);
        ComputeRowGrid(w + c, n, 1, a.grid.bits, a.grid.sym, a.grid.mse, &a.scales[g * rows + r],
                       &a.zeros[g * rows + r]);
      }
      const float scale = a.scales[g * rows + r], zero = a.zeros[g * rows + r];
      const float code = QuantCode(w[c], scale, zero, maxq);
      const float q = Dequant(code, scale, zero);
      const float* hrow = a.hinv.data + i * a.hinv.ld;
      const float d = hrow[i];
      const float e = (w[c] - q) / d;
      loss += 0.5 * static_cast<double>(e) * e;
      for (int64_t j = i + 1; j < count; ++j) w[a.begin + j] -= e * hrow[j];
      w[c] = q;
      a.codes[r * cols + c] = static_cast<int32_t>(code);
      err[i] = e;
    }
    a.loss[r] += static_cast<float>(loss);
  }
}

absl::Status CpuBackend::GptqBlock(const GptqBlockArgs& a) {
  DGPTQ_RETURN_IF_ERROR(CheckMat(a.w, "weight"));
  DGPTQ_RETURN_IF_ERROR(CheckSquare(a.hinv, "hinv block"));
  if (a.begin < 0 || a.end > a.w.cols || a.begin >= a.end || a.hinv.rows != a.end - a.begin ||
      a.err.rows != a.w.rows || a.err.cols < a.end - a.begin) {
    return absl::InvalidArgumentError("gptq block: inconsistent block bounds or shapes");
  }
  ParallelFor(a.w.rows, threads_, 8, [&](int64_t b, int64_t e) { GptqBlockRows(a, b, e); });
  return absl::OkStatus();
}

}  // namespace

std::unique_ptr<Backend> MakeCpuBackend(int threads) {
  return std::make_unique<CpuBackend>(threads);
}

}  // namespace dgptq::kernels
