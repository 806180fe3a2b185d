// Model-forward operations on the CPU: plain loops over rows, threads across rows
// (or across windows and heads for attention), fp32 storage with fp64 reductions
// where a sum spans a whole row.
#include "kernels/cpu/forward.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_format.h"
#include "kernels/cpu/parallel.h"

namespace dgptq::kernels::cpu {
namespace {

absl::Status SameShape(const Mat& a, const Mat& b, const char* what) {
  if (a.rows != b.rows || a.cols != b.cols) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: shapes [%d, %d] and [%d, %d] differ",
                                                      what, a.rows, a.cols, b.rows, b.cols));
  }
  return absl::OkStatus();
}

template <typename Fn>
void ForRows(int threads, const Mat& x, Fn&& fn) {
  ParallelFor(x.rows, threads, 16, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) fn(r);
  });
}

}  // namespace

absl::Status Embedding(int threads, const int32_t* ids, const Mat& table, const Mat& out) {
  if (table.cols != out.cols) return absl::InvalidArgumentError("embedding: width mismatch");
  ForRows(threads, out, [&](int64_t r) {
    std::copy_n(table.data + static_cast<int64_t>(ids[r]) * table.ld, out.cols, out.data + r * out.ld);
  });
  return absl::OkStatus();
}

absl::Status RmsNorm(int threads, const Mat& x, const float* w, float eps, const Mat& out) {
  if (absl::Status s = SameShape(x, out, "rmsnorm"); !s.ok()) return s;
  ForRows(threads, x, [&](int64_t r) {
    const float* xr = x.data + r * x.ld;
    double ss = 0;
    for (int64_t c = 0; c < x.cols; ++c) ss += double(xr[c]) * xr[c];
    const float inv = 1.0f / std::sqrt(static_cast<float>(ss / x.cols) + eps);
    float* o = out.data + r * out.ld;
    for (int64_t c = 0; c < x.cols; ++c) o[c] = w[c] * (xr[c] * inv);
  });
  return absl::OkStatus();
}

absl::Status LayerNorm(int threads, const Mat& x, const float* w, const float* b, float eps,
                       const Mat& out) {
  if (absl::Status s = SameShape(x, out, "layernorm"); !s.ok()) return s;
  ForRows(threads, x, [&](int64_t r) {
    const float* xr = x.data + r * x.ld;
    double mean = 0, var = 0;
    for (int64_t c = 0; c < x.cols; ++c) mean += xr[c];
    mean /= x.cols;
    for (int64_t c = 0; c < x.cols; ++c) var += (xr[c] - mean) * (xr[c] - mean);
    const float inv = 1.0f / std::sqrt(static_cast<float>(var / x.cols) + eps);
    float* o = out.data + r * out.ld;
    for (int64_t c = 0; c < x.cols; ++c) {
      o[c] = static_cast<float>(xr[c] - mean) * inv * w[c] + b[c];
    }
  });
  return absl::OkStatus();
}

absl::Status AddBias(int threads, const Mat& x, const float* bias) {
  ForRows(threads, x, [&](int64_t r) {
    for (int64_t c = 0; c < x.cols; ++c) x.data[r * x.ld + c] += bias[c];
  });
  return absl::OkStatus();
}

absl::Status Add(int threads, const Mat& x, const Mat& y) {
  if (absl::Status s = SameShape(x, y, "add"); !s.ok()) return s;
  ForRows(threads, x, [&](int64_t r) {
    for (int64_t c = 0; c < x.cols; ++c) x.data[r * x.ld + c] += y.data[r * y.ld + c];
  });
  return absl::OkStatus();
}

absl::Status SiluMul(int threads, const Mat& gate, const Mat& up, const Mat& out) {
  if (absl::Status s = SameShape(gate, up, "silu_mul"); !s.ok()) return s;
  ForRows(threads, gate, [&](int64_t r) {
    for (int64_t c = 0; c < gate.cols; ++c) {
      const float g = gate.data[r * gate.ld + c];
      out.data[r * out.ld + c] = g / (1.0f + std::exp(-g)) * up.data[r * up.ld + c];
    }
  });
  return absl::OkStatus();
}

absl::Status Relu(int threads, const Mat& x) {
  ForRows(threads, x, [&](int64_t r) {
    for (int64_t c = 0; c < x.cols; ++c) x.data[r * x.ld + c] = std::max(0.0f, x.data[r * x.ld + c]);
  });
  return absl::OkStatus();
}

absl::Status Rope(int threads, const Mat& x, int64_t heads, int64_t head_dim, int64_t seq_len,
                  const float* inv_freq) {
  if (x.cols != heads * head_dim || head_dim % 2 != 0 || seq_len <= 0) {
    return absl::InvalidArgumentError("rope: bad head layout");
  }
  const int64_t half = head_dim / 2;
  ForRows(threads, x, [&](int64_t r) {
    const float pos = static_cast<float>(r % seq_len);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[i];
      const float c = std::cos(angle), s = std::sin(angle);
      for (int64_t h = 0; h < heads; ++h) {
        float* p = x.data + r * x.ld + h * head_dim;
        const float a = p[i], b = p[i + half];
        p[i] = a * c - b * s;
        p[i + half] = b * c + a * s;
      }
    }
  });
  return absl::OkStatus();
}

absl::Status Attention(int threads, const Mat& q, const Mat& k, const Mat& v, int64_t seq_len,
                       int64_t heads, int64_t kv_heads, int64_t head_dim, float scale,
                       const Mat& out) {
  if (seq_len <= 0 || q.rows % seq_len != 0 || q.cols != heads * head_dim ||
      k.cols != kv_heads * head_dim || v.cols != k.cols || kv_heads <= 0 ||
      heads % kv_heads != 0 || k.rows != q.rows || v.rows != q.rows) {
    return absl::InvalidArgumentError("attention: inconsistent shapes");
  }
  const int64_t windows = q.rows / seq_len, group = heads / kv_heads, L = seq_len;
  // Per (window, head): S = Q K^T by GEMM, causal softmax row by row, O = P V by GEMM.
  ParallelFor(windows * heads, threads, 1, [&](int64_t b, int64_t e) {
    std::vector<float> p(L * L);
    for (int64_t wh = b; wh < e; ++wh) {
      const int64_t w = wh / heads, h = wh % heads, kh = h / group, base = w * L;
      const float* qh = q.data + base * q.ld + h * head_dim;
      const float* kk = k.data + base * k.ld + kh * head_dim;
      const float* vv = v.data + base * v.ld + kh * head_dim;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, head_dim, scale, qh, q.ld, kk,
                  k.ld, 0.0f, p.data(), L);
      for (int64_t i = 0; i < L; ++i) {
        float* row = p.data() + i * L;
        const float mx = *std::max_element(row, row + i + 1);
        float sum = 0;
        for (int64_t j = 0; j <= i; ++j) sum += (row[j] = std::exp(row[j] - mx));
        const float inv = 1.0f / sum;
        for (int64_t j = 0; j <= i; ++j) row[j] *= inv;
        std::fill(row + i + 1, row + L, 0.0f);
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, head_dim, L, 1.0f, p.data(), L, vv,
                  v.ld, 0.0f, out.data + base * out.ld + h * head_dim, out.ld);
    }
  });
  return absl::OkStatus();
}

absl::Status CrossEntropy(int threads, const Mat& logits, const int32_t* targets, float* nll) {
  ForRows(threads, logits, [&](int64_t r) {
    if (targets[r] < 0 || targets[r] >= logits.cols) {
      nll[r] = 0.0f;
      return;
    }
    const float* l = logits.data + r * logits.ld;
    const float mx = *std::max_element(l, l + logits.cols);
    double sum = 0;
    for (int64_t c = 0; c < logits.cols; ++c) sum += std::exp(double(l[c]) - mx);
    nll[r] = static_cast<float>(std::log(sum) + mx - l[targets[r]]);
  });
  return absl::OkStatus();
}

}  // namespace dgptq::kernels::cpu
