// Shared test helpers: the one tolerance helper (normalised mean squared error),
// code comparison, deterministic random data and temporary directories.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace dgptq::testing {

// sum (a - b)^2 / sum b^2 (0 when both are zero).
inline double Nmse(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return den == 0 ? num : num / den;
}
inline constexpr double kNmseF32 = 1e-7;
inline constexpr double kNmseF16 = 1e-5;
inline constexpr double kNmseBF16 = 1e-4;

struct CodeDiff {
  size_t off_by_one = 0;
  size_t off_more = 0;
};
inline CodeDiff CompareCodes(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  CodeDiff d;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const int diff = std::abs(a[i] - b[i]);
    if (diff == 1) ++d.off_by_one;
    if (diff > 1) ++d.off_more;
  }
  return d;
}
// Quantized codes: at most one step off on at most 0.1% of entries (STYLE.md).
inline bool CodesClose(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  if (a.size() != b.size()) return false;
  const CodeDiff d = CompareCodes(a, b);
  return d.off_more == 0 && d.off_by_one <= a.size() / 1000;
}

inline std::vector<float> RandomNormal(size_t n, uint32_t seed, float stddev = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

// Correlated activations X [n, cols]: a random mixing of a few latent factors plus
// noise, with per-column scales spread over two orders of magnitude (like real LLM
// activations with outlier features).
inline std::vector<float> CorrelatedActivations(int64_t n, int64_t cols, uint32_t seed) {
  const int64_t k = std::max<int64_t>(1, cols / 4);
  std::vector<float> z = RandomNormal(n * k, seed), mix = RandomNormal(k * cols, seed + 1);
  std::vector<float> noise = RandomNormal(n * cols, seed + 2, 0.1f);
  std::vector<float> x(n * cols);
  for (int64_t c = 0; c < cols; ++c) {
    const float scale = std::pow(10.0f, 2.0f * (c % 7) / 6.0f - 1.0f);
    for (int64_t r = 0; r < n; ++r) {
      double s = noise[r * cols + c];
      for (int64_t j = 0; j < k; ++j) s += z[r * k + j] * mix[j * cols + c];
      x[r * cols + c] = static_cast<float>(s * scale);
    }
  }
  return x;
}

// H = X^T X in double, stored as float.
inline std::vector<float> Gram(const std::vector<float>& x, int64_t n, int64_t cols) {
  std::vector<float> h(cols * cols);
  for (int64_t i = 0; i < cols; ++i) {
    for (int64_t j = 0; j <= i; ++j) {
      double s = 0;
      for (int64_t r = 0; r < n; ++r) s += double(x[r * cols + i]) * x[r * cols + j];
      h[i * cols + j] = h[j * cols + i] = static_cast<float>(s);
    }
  }
  return h;
}

// A fresh directory under $TMPDIR, removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "dgptq-test-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// ../shared beside the source tree, or "" when absent (tests using it then skip).
inline std::string SharedDir() {
#ifdef DGPTQ_SOURCE_DIR
  const std::string p = std::string(DGPTQ_SOURCE_DIR) + "/../shared";
  if (std::filesystem::exists(p + "/models")) return p;
#endif
  return "";
}

}  // namespace dgptq::testing
