#include "bench/gptq_columnwise.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace dgptq::bench {
namespace {

using kernels::Backend;
using kernels::Buffer;
using kernels::Mat;

// Grids of every group of `w` as it is now (per channel: one group of all columns).
absl::Status StaticGrids(Backend& b, const Mat& w, const QuantConfig& cfg, float* scales,
                         float* zeros) {
  const int64_t g = cfg.group_size > 0 ? cfg.group_size : w.cols;
  for (int64_t c = 0, gi = 0; c < w.cols; c += g, ++gi) {
    DGPTQ_RETURN_IF_ERROR(b.ComputeGrid(w.Block(0, c, w.rows, std::min(g, w.cols - c)),
                                        kernels::GridSpec{cfg.bits, cfg.sym, cfg.mse},
                                        scales + gi * w.rows, zeros + gi * w.rows));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ColumnwiseResult> RunGptqColumnwise(Backend& b, const Mat& w_in, const Mat& h_in,
                                                   double nsamples, const QuantConfig& cfg) {
  DGPTQ_RETURN_IF_ERROR(cfg.Validate());
  const int64_t rows = w_in.rows, cols = w_in.cols;
  if (rows <= 0 || cols <= 0) return absl::InvalidArgumentError("empty weight");
  if (h_in.rows != cols || h_in.cols != cols) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Hessian [%d, %d] does not match a weight with %d columns", h_in.rows, h_in.cols, cols));
  }
  const auto t0 = std::chrono::steady_clock::now();
  const bool per_channel = cfg.group_size <= 0, dynamic = !per_channel && !cfg.static_groups;
  const int64_t g = per_channel ? cols : cfg.group_size;
  const size_t grid_bytes = cfg.NumGroups(cols) * rows * sizeof(float);
  DGPTQ_ASSIGN_OR_RETURN(Buffer scales, b.Allocate(grid_bytes));
  DGPTQ_ASSIGN_OR_RETURN(Buffer zeros, b.Allocate(grid_bytes));
  // Per-channel grids come from W before dead columns are zeroed; static ones after.
  if (per_channel) DGPTQ_RETURN_IF_ERROR(StaticGrids(b, w_in, cfg, scales.f32(), zeros.f32()));
  DGPTQ_RETURN_IF_ERROR(b.PrepareHessian(h_in, w_in, static_cast<float>(1.0 / nsamples)));
  if (cfg.static_groups) {
    DGPTQ_RETURN_IF_ERROR(StaticGrids(b, w_in, cfg, scales.f32(), zeros.f32()));
  }

  // Act-order permutation (identity without it), then Hinv = chol((H + damp)^-1) upper.
  std::vector<int32_t> perm(cols);
  for (int64_t i = 0; i < cols; ++i) perm[i] = static_cast<int32_t>(i);
  DGPTQ_ASSIGN_OR_RETURN(Buffer perm_dev, b.Allocate(cols * sizeof(int32_t)));
  DGPTQ_ASSIGN_OR_RETURN(Buffer wp, b.Allocate(rows * cols * sizeof(float)));
  DGPTQ_ASSIGN_OR_RETURN(Buffer hp, b.Allocate(cols * cols * sizeof(float)));
  if (cfg.act_order) {
    DGPTQ_RETURN_IF_ERROR(b.ArgsortDiagDescending(h_in, perm_dev.i32()));
    DGPTQ_RETURN_IF_ERROR(b.Download(perm_dev.data(), perm.data(), cols * sizeof(int32_t)));
  } else {
    DGPTQ_RETURN_IF_ERROR(b.Upload(perm.data(), perm_dev.data(), cols * sizeof(int32_t)));
  }
  const Mat w{wp.f32(), rows, cols, cols}, hinv{hp.f32(), cols, cols, cols};
  DGPTQ_RETURN_IF_ERROR(b.PermuteColumns(w_in, perm_dev.i32(), w));
  DGPTQ_RETURN_IF_ERROR(b.PermuteSymmetric(h_in, perm_dev.i32(), hinv));
  DGPTQ_RETURN_IF_ERROR(b.Dampen(hinv, cfg.damp_percent));
  DGPTQ_RETURN_IF_ERROR(b.CholeskyInverseUpper(hinv));

  std::vector<int32_t> col_group(cols, 0);
  for (int64_t i = 0; i < cols && !per_channel; ++i) {
    col_group[i] = static_cast<int32_t>((cfg.static_groups ? perm[i] : i) / g);
  }
  DGPTQ_ASSIGN_OR_RETURN(Buffer col_group_dev,
                         kernels::UploadNew(b, col_group.data(), cols * sizeof(int32_t)));
  const float one = 1.0f;
  DGPTQ_ASSIGN_OR_RETURN(Buffer one_dev, kernels::UploadNew(b, &one, sizeof(float)));
  const Mat unit{one_dev.f32(), 1, 1, 1};
  // The diagonal, to the host once: it scales each column's rank-1 update (GEMM alpha). A
  // [cols, 1] view with leading dimension cols + 1 walks it; one GEMM by 1 packs it.
  DGPTQ_ASSIGN_OR_RETURN(Buffer diag_buf, b.Allocate(cols * sizeof(float)));
  DGPTQ_RETURN_IF_ERROR(b.Gemm(false, false, 1.0f, Mat{hinv.data, cols, 1, cols + 1}, unit, 0.0f,
                               Mat{diag_buf.f32(), cols, 1, 1}));
  std::vector<float> hinv_diag(cols);
  DGPTQ_RETURN_IF_ERROR(b.Download(diag_buf.data(), hinv_diag.data(), cols * sizeof(float)));
  DGPTQ_ASSIGN_OR_RETURN(Buffer diff_buf, b.Allocate(rows * sizeof(float)));
  const Mat diff{diff_buf.f32(), rows, 1, 1};
  // [cols, rows]: column c's codes are contiguous, as QuantizeRtn writes a one-column view.
  DGPTQ_ASSIGN_OR_RETURN(Buffer codes_t, b.Allocate(cols * rows * sizeof(int32_t)));

  for (int64_t c = 0; c < cols; ++c) {
    const Mat col = w.Block(0, c, rows, 1);
    if (dynamic && c % g == 0) {
      const int64_t at = (c / g) * rows;
      DGPTQ_RETURN_IF_ERROR(b.ComputeGrid(w.Block(0, c, rows, std::min(g, cols - c)),
                                          kernels::GridSpec{cfg.bits, cfg.sym, cfg.mse},
                                          scales.f32() + at, zeros.f32() + at));
    }
    // diff = w[:, c]; w[:, c] = q (and its codes); diff -= q.
    DGPTQ_RETURN_IF_ERROR(b.Gemm(false, false, 1.0f, col, unit, 0.0f, diff));
    DGPTQ_RETURN_IF_ERROR(b.QuantizeRtn(col, cfg.bits, col_group_dev.i32() + c, scales.f32(),
                                        zeros.f32(), codes_t.i32() + c * rows));
    DGPTQ_RETURN_IF_ERROR(b.Gemm(false, false, -1.0f, col, unit, 1.0f, diff));
    if (c + 1 < cols) {  // W[:, c+1:] -= (diff / Hinv[c, c]) Hinv[c, c+1:]
      const int64_t rest = cols - c - 1;
      DGPTQ_RETURN_IF_ERROR(b.Gemm(false, false, -1.0f / hinv_diag[c], diff,
                                   hinv.Block(c, c + 1, 1, rest), 1.0f,
                                   w.Block(0, c + 1, rows, rest)));
    }
  }
  std::vector<int32_t> t(cols * rows);
  DGPTQ_RETURN_IF_ERROR(b.Download(codes_t.data(), t.data(), t.size() * sizeof(int32_t)));
  DGPTQ_RETURN_IF_ERROR(b.Synchronize());
  ColumnwiseResult out;
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  out.codes.resize(rows * cols);
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t r = 0; r < rows; ++r) out.codes[r * cols + perm[c]] = t[c * rows + r];
  }
  return out;
}

double CodesAgreement(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  if (a.size() != b.size()) return 0;
  if (a.empty()) return 1;
  size_t same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i] == b[i];
  return static_cast<double>(same) / static_cast<double>(a.size());
}

}  // namespace dgptq::bench
