#include "worker/gptq/gptq.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace dgptq::worker {
namespace {

using kernels::Backend;
using kernels::Buffer;
using kernels::GridSpec;
using kernels::Mat;

absl::StatusOr<Buffer> Alloc(Backend& b, size_t n, size_t esize) {
  return b.Allocate(std::max<size_t>(1, n) * esize);
}

absl::Status CheckShapes(const Mat& w, const Mat* h) {
  if (w.rows <= 0 || w.cols <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("weight must be a non-empty matrix, got [%d, %d]", w.rows, w.cols));
  }
  if (h != nullptr && (h->rows != h->cols || h->rows != w.cols)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Hessian must be [%d, %d] for a weight [%d, %d], got [%d, %d]", w.cols, w.cols, w.rows,
        w.cols, h->rows, h->cols));
  }
  return absl::OkStatus();
}

// Grids of every group computed up front on the current w (per channel: one group).
absl::Status ComputeStaticGrids(Backend& b, const Mat& w, const QuantConfig& cfg,
                                const DeviceQuantized& out) {
  const GridSpec grid{cfg.bits, cfg.sym, cfg.mse};
  const int64_t g = cfg.group_size > 0 ? cfg.group_size : w.cols;
  for (int64_t c = 0, gi = 0; c < w.cols; c += g, ++gi) {
    const Mat block = w.Block(0, c, w.rows, std::min(g, w.cols - c));
    DGPTQ_RETURN_IF_ERROR(b.ComputeGrid(block, grid, out.scales.f32() + gi * w.rows,
                                        out.zeros.f32() + gi * w.rows));
  }
  return absl::OkStatus();
}

absl::StatusOr<DeviceQuantized> AllocOutputs(Backend& b, const Mat& w, const QuantConfig& cfg) {
  DeviceQuantized out;
  const size_t groups = cfg.NumGroups(w.cols);
  DGPTQ_ASSIGN_OR_RETURN(out.codes, Alloc(b, w.rows * w.cols, sizeof(int32_t)));
  DGPTQ_ASSIGN_OR_RETURN(out.scales, Alloc(b, groups * w.rows, sizeof(float)));
  DGPTQ_ASSIGN_OR_RETURN(out.zeros, Alloc(b, groups * w.rows, sizeof(float)));
  return out;
}

// H^-1's upper Cholesky factor from the prepared H `h0`, raising damping x10 while
// H + damp*mean(diag)*I is not positive definite.
absl::Status FactorInverse(Backend& b, const Mat& h0, const Mat& hinv, const QuantConfig& cfg,
                           GptqStats* stats) {
  const size_t bytes = h0.rows * h0.cols * sizeof(float);
  float damp = cfg.damp_percent;
  for (;;) {
    DGPTQ_RETURN_IF_ERROR(b.Copy(hinv.data, h0.data, bytes));
    DGPTQ_RETURN_IF_ERROR(b.Dampen(hinv, damp));
    absl::Status s = b.CholeskyInverseUpper(hinv);
    if (s.ok()) {
      stats->damp_used = damp;
      return s;
    }
    if (s.code() != absl::StatusCode::kFailedPrecondition) return s;
    if (damp * 10.0f > cfg.damp_max * 1.0001f) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "Hessian is not positive definite even with damp_percent %g (cap %g): %s", damp,
          cfg.damp_max, s.message()));
    }
    damp *= 10.0f;
    ++stats->damp_raises;
  }
}

// End of the block starting at i1: a group starting inside the block must end inside
// it, so its grid is computed from fully updated columns (exact for any block size).
int64_t BlockEnd(int64_t i1, int64_t cols, const QuantConfig& cfg, bool dynamic) {
  const int64_t i2 = std::min<int64_t>(i1 + cfg.block_size, cols);
  if (!dynamic) return i2;
  const int64_t g = cfg.group_size;
  for (int64_t c = (i1 / g + 1) * g; c < i2; c += g) {
    if (std::min(c + g, cols) > i2) return c;
  }
  return i2;
}

std::vector<int32_t> Inverse(const std::vector<int32_t>& perm) {
  std::vector<int32_t> inv(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) inv[perm[i]] = static_cast<int32_t>(i);
  return inv;
}

absl::Status CheckFinite(Backend& b, const Mat& h) {
  DGPTQ_ASSIGN_OR_RETURN(double s, b.Sum(h.data, h.rows * h.cols));
  if (!std::isfinite(s)) {
    return absl::InvalidArgumentError("Hessian contains NaN or Inf");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DeviceQuantized> RunGptq(Backend& b, const DeviceModule& m, double nsamples,
                                        const QuantConfig& cfg) {
  const auto t0 = std::chrono::steady_clock::now();
  DGPTQ_RETURN_IF_ERROR(cfg.Validate());
  DGPTQ_RETURN_IF_ERROR(CheckShapes(m.w, &m.h));
  if (!(nsamples > 0) || !std::isfinite(nsamples)) {
    return absl::InvalidArgumentError(absl::StrFormat("nsamples must be > 0, got %g", nsamples));
  }
  DGPTQ_RETURN_IF_ERROR(CheckFinite(b, m.h));
  const int64_t rows = m.w.rows, cols = m.w.cols;
  DGPTQ_ASSIGN_OR_RETURN(DeviceQuantized out, AllocOutputs(b, m.w, cfg));
  const bool per_channel = cfg.group_size <= 0;
  const bool dynamic = !per_channel && !cfg.static_groups;
  // Per-channel grids come from W before dead columns are zeroed, as the reference.
  if (per_channel) DGPTQ_RETURN_IF_ERROR(ComputeStaticGrids(b, m.w, cfg, out));
  DGPTQ_RETURN_IF_ERROR(b.PrepareHessian(m.h, m.w, static_cast<float>(1.0 / nsamples)));
  if (cfg.static_groups) DGPTQ_RETURN_IF_ERROR(ComputeStaticGrids(b, m.w, cfg, out));

  // Act-order: work on W and H permuted by descending diag(H).
  Mat w = m.w, h = m.h;
  Buffer wp, hp, perm_dev;
  std::vector<int32_t> perm(cols);
  for (int64_t i = 0; i < cols; ++i) perm[i] = static_cast<int32_t>(i);
  if (cfg.act_order) {
    DGPTQ_ASSIGN_OR_RETURN(perm_dev, Alloc(b, cols, sizeof(int32_t)));
    DGPTQ_ASSIGN_OR_RETURN(wp, Alloc(b, rows * cols, sizeof(float)));
    DGPTQ_ASSIGN_OR_RETURN(hp, Alloc(b, cols * cols, sizeof(float)));
    DGPTQ_RETURN_IF_ERROR(b.ArgsortDiagDescending(m.h, perm_dev.i32()));
    DGPTQ_RETURN_IF_ERROR(b.Download(perm_dev.data(), perm.data(), cols * sizeof(int32_t)));
    w = Mat{wp.f32(), rows, cols, cols};
    h = Mat{hp.f32(), cols, cols, cols};
    DGPTQ_RETURN_IF_ERROR(b.PermuteColumns(m.w, perm_dev.i32(), w));
    DGPTQ_RETURN_IF_ERROR(b.PermuteSymmetric(m.h, perm_dev.i32(), h));
  }
  // Group of each (permuted) column, and g_idx of each original column.
  std::vector<int32_t> col_group(cols, 0);
  out.g_idx.assign(cols, 0);
  for (int64_t i = 0; i < cols && !per_channel; ++i) {
    const int32_t g = cfg.group_size;
    col_group[i] = (cfg.static_groups ? perm[i] : static_cast<int32_t>(i)) / g;
    out.g_idx[perm[i]] = cfg.static_groups ? perm[i] / g : static_cast<int32_t>(i) / g;
  }
  DGPTQ_ASSIGN_OR_RETURN(Buffer col_group_dev, Alloc(b, cols, sizeof(int32_t)));
  DGPTQ_RETURN_IF_ERROR(b.Upload(col_group.data(), col_group_dev.data(), cols * sizeof(int32_t)));

  // Hinv = upper Cholesky factor of (H + damping)^-1; `h` keeps the undamped H.
  DGPTQ_ASSIGN_OR_RETURN(Buffer hinv_buf, Alloc(b, cols * cols, sizeof(float)));
  const Mat hinv{hinv_buf.f32(), cols, cols, cols};
  DGPTQ_RETURN_IF_ERROR(FactorInverse(b, h, hinv, cfg, &out.stats));

  // GPTQ Alg. 1: blocks of columns, each quantized column by column by the fused block
  // kernel, then one GEMM pushes the block's errors onto all later columns (lazy batch).
  const int64_t bs = cfg.block_size;
  DGPTQ_ASSIGN_OR_RETURN(Buffer err_buf, Alloc(b, rows * bs, sizeof(float)));
  DGPTQ_ASSIGN_OR_RETURN(Buffer loss_buf, Alloc(b, rows, sizeof(float)));
  for (int64_t i1 = 0; i1 < cols;) {
    const int64_t i2 = BlockEnd(i1, cols, cfg, dynamic), count = i2 - i1;
    kernels::GptqBlockArgs args;
    args.w = w;
    args.hinv = hinv.Block(i1, i1, count, count);
    args.begin = i1;
    args.end = i2;
    args.grid = GridSpec{cfg.bits, cfg.sym, cfg.mse};
    args.group_size = cfg.group_size;
    args.dynamic_groups = dynamic;
    args.col_group = col_group_dev.i32();
    args.scales = out.scales.f32();
    args.zeros = out.zeros.f32();
    args.codes = out.codes.i32();
    args.err = Mat{err_buf.f32(), rows, count, bs};
    args.loss = loss_buf.f32();
    DGPTQ_RETURN_IF_ERROR(b.GptqBlock(args));
    if (i2 < cols) {
      DGPTQ_RETURN_IF_ERROR(b.Gemm(false, false, -1.0f, args.err,
                                   hinv.Block(i1, i2, count, cols - i2), 1.0f,
                                   w.Block(0, i2, rows, cols - i2)));
    }
    i1 = i2;
  }
  if (cfg.act_order) {
    const std::vector<int32_t> inv = Inverse(perm);
    DGPTQ_RETURN_IF_ERROR(b.Upload(inv.data(), perm_dev.data(), cols * sizeof(int32_t)));
    DGPTQ_RETURN_IF_ERROR(b.PermuteColumns(w, perm_dev.i32(), m.w));
    // wp is free once w (= wp) has been un-permuted; reuse it for the codes.
    DGPTQ_RETURN_IF_ERROR(b.Copy(wp.data(), out.codes.data(), rows * cols * sizeof(int32_t)));
    DGPTQ_RETURN_IF_ERROR(
        b.PermuteColumnsI32(wp.i32(), rows, cols, perm_dev.i32(), out.codes.i32()));
  }
  DGPTQ_ASSIGN_OR_RETURN(out.stats.loss, b.Sum(loss_buf.f32(), rows));
  DGPTQ_RETURN_IF_ERROR(b.Synchronize());
  out.stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

absl::StatusOr<DeviceQuantized> RunRtn(Backend& b, const Mat& w, const QuantConfig& cfg) {
  const auto t0 = std::chrono::steady_clock::now();
  DGPTQ_RETURN_IF_ERROR(cfg.Validate());
  DGPTQ_RETURN_IF_ERROR(CheckShapes(w, nullptr));
  DGPTQ_ASSIGN_OR_RETURN(DeviceQuantized out, AllocOutputs(b, w, cfg));
  DGPTQ_RETURN_IF_ERROR(ComputeStaticGrids(b, w, cfg, out));
  out.g_idx.assign(w.cols, 0);
  for (int64_t i = 0; i < w.cols && cfg.group_size > 0; ++i) out.g_idx[i] = i / cfg.group_size;
  DGPTQ_ASSIGN_OR_RETURN(Buffer col_group, Alloc(b, w.cols, sizeof(int32_t)));
  DGPTQ_RETURN_IF_ERROR(b.Upload(out.g_idx.data(), col_group.data(), w.cols * sizeof(int32_t)));
  DGPTQ_RETURN_IF_ERROR(b.QuantizeRtn(w, cfg.bits, col_group.i32(), out.scales.f32(),
                                      out.zeros.f32(), out.codes.i32()));
  DGPTQ_RETURN_IF_ERROR(b.Synchronize());
  out.stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace dgptq::worker
