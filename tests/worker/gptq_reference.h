// A straightforward GPTQ written from the paper and DESIGN.md, independent of the
// Backend code: column by column (no lazy batch, no blocks), its own grid and its own
// fp64 Cholesky. Weights, grids and updates are fp32 as in the reference
// implementations (torch fp32): the extreme value of a sym group sits exactly on a
// rounding tie (|xmax| / scale = maxq / 2), which fp64 would break differently.
// Test-only.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "common/quant_config.h"

namespace dgptq::testing {

struct RefQuant {
  std::vector<int32_t> codes;  // [rows, cols]
  std::vector<double> deq;     // [rows, cols]
  std::vector<int32_t> g_idx;  // [cols]
  std::vector<uint8_t> tie;    // [rows, cols] w / scale within 1e-4 of a rounding tie
  double loss = 0;
};

struct RefGrid {
  float scale, zero;
};

inline float RoundEven(float x) { return std::nearbyint(x); }

inline RefGrid RefFindGrid(const std::vector<float>& x, int bits, bool sym, bool mse) {
  const float maxq = (1 << bits) - 1;
  float xmin = 0, xmax = 0;
  for (float v : x) xmin = std::min(xmin, v), xmax = std::max(xmax, v);
  if (sym) {
    xmax = std::max(std::abs(xmin), xmax);
    if (xmin < 0) xmin = -xmax;
  }
  if (xmin == 0 && xmax == 0) xmin = -1, xmax = 1;
  auto grid = [&](float lo, float hi) {
    const float s = (hi - lo) / maxq;
    return RefGrid{s, sym ? (maxq + 1) / 2 : RoundEven(-lo / s)};
  };
  RefGrid best = grid(xmin, xmax);
  if (!mse) return best;
  float best_err = INFINITY;
  for (int i = 0; i < 80; ++i) {
    const float p = 1.0f - i / 100.0f;
    RefGrid g = grid(p * xmin, p * xmax);
    if (sym) g.zero = (maxq + 1) / 2;
    float err = 0;
    for (float v : x) {
      const float q = std::clamp(RoundEven(v / g.scale) + g.zero, 0.0f, maxq);
      err += std::pow(std::abs(g.scale * (q - g.zero) - v), 2.4f);
    }
    if (err < best_err) best_err = err, best = g;
  }
  return best;
}

// Upper Cholesky factor U of A^-1 (A^-1 = U^T U), A symmetric positive definite [n, n].
inline std::vector<double> RefCholInvUpper(std::vector<double> a, int64_t n) {
  std::vector<double> l(n * n, 0.0);  // A = L L^T
  for (int64_t j = 0; j < n; ++j) {
    double d = a[j * n + j];
    for (int64_t k = 0; k < j; ++k) d -= l[j * n + k] * l[j * n + k];
    l[j * n + j] = std::sqrt(d);
    for (int64_t i = j + 1; i < n; ++i) {
      double s = a[i * n + j];
      for (int64_t k = 0; k < j; ++k) s -= l[i * n + k] * l[j * n + k];
      l[i * n + j] = s / l[j * n + j];
    }
  }
  std::vector<double> li(n * n, 0.0);  // L^-1 (lower)
  for (int64_t j = 0; j < n; ++j) {
    li[j * n + j] = 1.0 / l[j * n + j];
    for (int64_t i = j + 1; i < n; ++i) {
      double s = 0;
      for (int64_t k = j; k < i; ++k) s -= l[i * n + k] * li[k * n + j];
      li[i * n + j] = s / l[i * n + i];
    }
  }
  std::vector<double> inv(n * n, 0.0);  // A^-1 = L^-T L^-1
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t k = std::max(i, j); k < n; ++k) s += li[k * n + i] * li[k * n + j];
      inv[i * n + j] = s;
    }
  }
  // Upper Cholesky of inv: inv = U^T U.
  std::vector<double> u(n * n, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    double d = inv[i * n + i];
    for (int64_t k = 0; k < i; ++k) d -= u[k * n + i] * u[k * n + i];
    u[i * n + i] = std::sqrt(d);
    for (int64_t j = i + 1; j < n; ++j) {
      double s = inv[i * n + j];
      for (int64_t k = 0; k < i; ++k) s -= u[k * n + i] * u[k * n + j];
      u[i * n + j] = s / u[i * n + i];
    }
  }
  return u;
}

inline RefQuant RefGptq(const std::vector<float>& w_in, const std::vector<float>& h_in,
                        int64_t rows, int64_t cols, double nsamples, const QuantConfig& cfg) {
  std::vector<float> w(w_in);
  std::vector<double> h(h_in.begin(), h_in.end());
  for (double& v : h) v /= nsamples;
  const int64_t g = cfg.group_size > 0 ? cfg.group_size : cols;
  const int64_t groups = (cols + g - 1) / g;
  std::vector<RefGrid> grids(groups * rows);
  auto find = [&](int64_t gi, int64_t c0) {
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<float> x;
      for (int64_t c = c0; c < std::min(cols, c0 + g); ++c) x.push_back(w[r * cols + c]);
      grids[gi * rows + r] = RefFindGrid(x, cfg.bits, cfg.sym, cfg.mse);
    }
  };
  if (cfg.group_size <= 0) find(0, 0);
  for (int64_t i = 0; i < cols; ++i) {
    if (h[i * cols + i] != 0) continue;
    h[i * cols + i] = 1;
    for (int64_t r = 0; r < rows; ++r) w[r * cols + i] = 0;
  }
  if (cfg.static_groups) for (int64_t gi = 0; gi < groups; ++gi) find(gi, gi * g);
  std::vector<int32_t> perm(cols);
  std::iota(perm.begin(), perm.end(), 0);
  if (cfg.act_order) {
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int a, int b) { return h[a * cols + a] > h[b * cols + b]; });
  }
  std::vector<float> wp(rows * cols);
  std::vector<double> hp(cols * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) wp[r * cols + c] = w[r * cols + perm[c]];
  double mean = 0;
  for (int64_t i = 0; i < cols; ++i) mean += h[i * cols + i] / cols;
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j) hp[i * cols + j] = h[perm[i] * cols + perm[j]];
  for (int64_t i = 0; i < cols; ++i) hp[i * cols + i] += cfg.damp_percent * mean;
  const std::vector<double> ud = RefCholInvUpper(hp, cols);
  const std::vector<float> u(ud.begin(), ud.end());
  RefQuant out;
  out.codes.assign(rows * cols, 0);
  out.deq.assign(rows * cols, 0);
  out.g_idx.assign(cols, 0);
  out.tie.assign(rows * cols, 0);
  const float maxq = (1 << cfg.bits) - 1;
  const bool dynamic = cfg.group_size > 0 && !cfg.static_groups;
  for (int64_t c = 0; c < cols; ++c) {
    const int64_t gi = cfg.group_size <= 0 ? 0 : cfg.static_groups ? perm[c] / g : c / g;
    out.g_idx[perm[c]] = static_cast<int32_t>(gi);
    if (dynamic && c % g == 0) {
      for (int64_t r = 0; r < rows; ++r) {
        std::vector<float> x(wp.begin() + r * cols + c,
                              wp.begin() + r * cols + std::min(cols, c + g));
        grids[gi * rows + r] = RefFindGrid(x, cfg.bits, cfg.sym, cfg.mse);
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const RefGrid& gr = grids[gi * rows + r];
      const float v = wp[r * cols + c];
      const float code = std::clamp(RoundEven(v / gr.scale) + gr.zero, 0.0f, maxq);
      const float q = gr.scale * (code - gr.zero);
      const float err = (v - q) / u[c * cols + c];
      out.loss += double(err) * err / 2;
      for (int64_t j = c + 1; j < cols; ++j) wp[r * cols + j] -= err * u[c * cols + j];
      out.codes[r * cols + perm[c]] = static_cast<int32_t>(code);
      const float t = v / gr.scale;
      out.tie[r * cols + perm[c]] = std::abs(std::abs(t - std::floor(t)) - 0.5f) < 1e-4f;
      out.deq[r * cols + perm[c]] = q;
    }
  }
  return out;
}

}  // namespace dgptq::testing
