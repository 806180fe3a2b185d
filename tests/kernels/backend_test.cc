// Every Backend operation against a plain fp64 reference, on the CPU backend and,
// where a GPU exists, on CUDA (the CUDA kernels' CPU twins are the same references).
#include "kernels/backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "kernels/packing.h"
#include "kernels/quant_math.h"
#include "tests/test_util.h"

namespace dgptq::kernels {
namespace {

using dgptq::testing::kNmseBF16;
using dgptq::testing::Nmse;
using dgptq::testing::RandomNormal;

class BackendOps : public ::testing::TestWithParam<DeviceKind> {
 protected:
  void SetUp() override {
    auto b = MakeBackend(GetParam());
    if (!b.ok()) GTEST_SKIP() << b.status();
    b_ = std::move(b).value();
  }
  // Device copy of host data.
  template <typename T>
  Buffer Put(const std::vector<T>& v) {
    auto buf = b_->Allocate(v.size() * sizeof(T));
    EXPECT_TRUE(buf.ok());
    EXPECT_TRUE(b_->Upload(v.data(), buf->data(), v.size() * sizeof(T)).ok());
    return std::move(buf).value();
  }
  template <typename T>
  std::vector<T> Get(const Buffer& buf, size_t n) {
    std::vector<T> v(n);
    EXPECT_TRUE(b_->Download(buf.data(), v.data(), n * sizeof(T)).ok());
    return v;
  }
  std::unique_ptr<Backend> b_;
};

std::string KindName(const ::testing::TestParamInfo<DeviceKind>& i) {
  return i.param == DeviceKind::kCpu ? "cpu" : "cuda";
}

// Shapes include 1, 3, odd sizes and non-multiples of tiles and groups.
const int64_t kDims[][3] = {{1, 1, 1}, {3, 5, 7}, {17, 33, 65}, {64, 129, 31}, {130, 96, 257}};

TEST_P(BackendOps, GemmAllTransposes) {
  for (const auto& d : kDims) {
    const int64_t m = d[0], n = d[1], k = d[2];
    for (int ta = 0; ta < 2; ++ta) {
      for (int tb = 0; tb < 2; ++tb) {
        const auto a = RandomNormal(m * k, 1), bm = RandomNormal(k * n, 2), c0 = RandomNormal(m * n, 3);
        Buffer da = Put(a), db = Put(bm), dc = Put(c0);
        const Mat ma{da.f32(), ta ? k : m, ta ? m : k, ta ? m : k};
        const Mat mb{db.f32(), tb ? n : k, tb ? k : n, tb ? k : n};
        ASSERT_TRUE(b_->Gemm(ta, tb, -0.5f, ma, mb, 2.0f, Mat{dc.f32(), m, n, n}).ok());
        std::vector<float> ref(m * n);
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t j = 0; j < n; ++j) {
            double s = 0;
            for (int64_t l = 0; l < k; ++l) {
              s += double(ta ? a[l * m + i] : a[i * k + l]) * (tb ? bm[j * k + l] : bm[l * n + j]);
            }
            ref[i * n + j] = static_cast<float>(-0.5 * s + 2.0 * c0[i * n + j]);
          }
        }
        EXPECT_LT(Nmse(Get<float>(dc, m * n).data(), ref.data(), m * n), 1e-7)
            << m << "x" << n << "x" << k << " ta=" << ta << " tb=" << tb;
      }
    }
  }
}

// Dequantize rebuilds exactly what QuantizedWeight::Dequantize does on the host, for grids
// of several groups and an act-order g_idx, into a strided view.
TEST_P(BackendOps, DequantizeMatchesTheHost) {
  for (const auto& d : kDims) {
    const int64_t rows = d[0], cols = d[2], group = 4, groups = (cols + group - 1) / group;
    QuantizedWeight q;
    q.bits = 4, q.group_size = group, q.sym = false, q.rows = rows, q.cols = cols;
    std::mt19937 gen(static_cast<uint32_t>(rows * 131 + cols));
    for (int64_t i = 0; i < rows * cols; ++i) q.codes.push_back(static_cast<int32_t>(gen() % 16));
    for (int64_t c = 0; c < cols; ++c) q.g_idx.push_back(static_cast<int32_t>((cols - 1 - c) / group));
    q.scales = RandomNormal(groups * rows, 8);
    for (int64_t i = 0; i < groups * rows; ++i) q.zeros.push_back(static_cast<float>(gen() % 16));
    ASSERT_TRUE(q.Validate().ok()) << q.Validate();
    const Tensor want = q.Dequantize();
    Buffer codes = Put(q.codes), g_idx = Put(q.g_idx), scales = Put(q.scales), zeros = Put(q.zeros);
    Buffer w = Put(std::vector<float>(rows * (cols + 2), -7.0f));
    ASSERT_TRUE(b_->Dequantize(codes.i32(), g_idx.i32(), scales.f32(), zeros.f32(),
                               Mat{w.f32(), rows, cols, cols + 2}).ok());
    const std::vector<float> got = Get<float>(w, rows * (cols + 2));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        ASSERT_EQ(got[r * (cols + 2) + c], want.as<float>()[r * cols + c]) << r << "," << c;
      }
      EXPECT_EQ(got[r * (cols + 2) + cols], -7.0f) << "wrote past the view";
    }
  }
}

float RoundBf16(float x) { return BFloat16ToFloat(FloatToBFloat16(x)); }

// GemmBf16 is the GEMM of the bf16-rounded operands accumulated in fp32: against the fp64
// product of the rounded operands it is as close as an fp32 GEMM; against the unrounded
// product it carries bf16's rounding (so it did round). Strided views included.
TEST_P(BackendOps, GemmBf16RoundsTheOperands) {
  for (const auto& d : kDims) {
    const int64_t m = d[0], n = d[1], k = d[2];
    for (int ta = 0; ta < 2; ++ta) {
      for (int tb = 0; tb < 2; ++tb) {
        const int64_t pad = 3;  // leading dimensions wider than the views
        const int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
        const auto a = RandomNormal(ar * (ac + pad), 4), bm = RandomNormal(br * (bc + pad), 5);
        const auto c0 = RandomNormal(m * n, 6);
        Buffer da = Put(a), db = Put(bm), dc = Put(c0);
        ASSERT_TRUE(b_->GemmBf16(ta, tb, 1.5f, Mat{da.f32(), ar, ac, ac + pad},
                                 Mat{db.f32(), br, bc, bc + pad}, -1.0f, Mat{dc.f32(), m, n, n})
                        .ok());
        std::vector<float> rounded(m * n), exact(m * n);
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t j = 0; j < n; ++j) {
            double sr = 0, se = 0;
            for (int64_t l = 0; l < k; ++l) {
              const float x = ta ? a[l * (ac + pad) + i] : a[i * (ac + pad) + l];
              const float y = tb ? bm[j * (bc + pad) + l] : bm[l * (bc + pad) + j];
              sr += double(RoundBf16(x)) * RoundBf16(y);
              se += double(x) * y;
            }
            rounded[i * n + j] = static_cast<float>(1.5 * sr - c0[i * n + j]);
            exact[i * n + j] = static_cast<float>(1.5 * se - c0[i * n + j]);
          }
        }
        const std::vector<float> got = Get<float>(dc, m * n);
        const std::string at = std::to_string(m) + "x" + std::to_string(n) + "x" +
                               std::to_string(k) + " ta=" + std::to_string(ta) +
                               " tb=" + std::to_string(tb);
        EXPECT_LT(Nmse(got.data(), rounded.data(), m * n), 1e-7) << at;
        EXPECT_LT(Nmse(got.data(), exact.data(), m * n), kNmseBF16) << at;
        if (k >= 7) EXPECT_GT(Nmse(got.data(), exact.data(), m * n), 1e-9) << at;
      }
    }
  }
  // Shapes are checked as Gemm's are.
  Buffer x = Put(RandomNormal(12, 7));
  EXPECT_EQ(b_->GemmBf16(false, false, 1, Mat{x.f32(), 3, 4, 4}, Mat{x.f32(), 3, 4, 4}, 0,
                         Mat{x.f32(), 3, 4, 4})
                .code(),
            absl::StatusCode::kInvalidArgument);
}

std::vector<float> RefGram(const std::vector<float>& x, int64_t n, int64_t c) {
  std::vector<float> h(c * c);
  for (int64_t i = 0; i < c; ++i)
    for (int64_t j = 0; j < c; ++j) {
      double s = 0;
      for (int64_t r = 0; r < n; ++r) s += double(x[r * c + i]) * x[r * c + j];
      h[i * c + j] = static_cast<float>(s);
    }
  return h;
}

TEST_P(BackendOps, HessianAccumulatesInEveryInputDtype) {
  for (const auto& d : kDims) {
    const int64_t n = d[0] + d[2], c = d[1];
    const auto x = RandomNormal(n * c, 5);
    for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
      std::vector<uint16_t> half(n * c);
      std::vector<float> rounded(x);
      for (size_t i = 0; i < x.size() && t != DType::kF32; ++i) {
        half[i] = t == DType::kF16 ? FloatToHalf(x[i]) : FloatToBFloat16(x[i]);
        rounded[i] = t == DType::kF16 ? HalfToFloat(half[i]) : BFloat16ToFloat(half[i]);
      }
      Buffer dx = t == DType::kF32 ? Put(x) : Put(half);
      Buffer dh = Put(std::vector<float>(c * c, 0.0f));
      ASSERT_TRUE(b_->AccumulateHessian(ActView{dx.data(), t, n, c, c}, Mat{dh.f32(), c, c, c}).ok());
      const auto ref = RefGram(rounded, n, c);
      EXPECT_LT(Nmse(Get<float>(dh, c * c).data(), ref.data(), c * c), 1e-7)
          << DTypeName(t) << " n=" << n << " c=" << c;
    }
  }
}

TEST_P(BackendOps, HessianInChunksEqualsOnePass) {
  const int64_t n = 300, c = 40;
  const auto x = RandomNormal(n * c, 6);
  Buffer dx = Put(x);
  Buffer one = Put(std::vector<float>(c * c, 0.0f)), chunked = Put(std::vector<float>(c * c, 0.0f));
  ASSERT_TRUE(b_->AccumulateHessian(ActView{dx.data(), DType::kF32, n, c, c}, Mat{one.f32(), c, c, c}).ok());
  for (int64_t r0 = 0; r0 < n; r0 += 37) {
    const ActView part{dx.f32() + r0 * c, DType::kF32, std::min<int64_t>(37, n - r0), c, c};
    ASSERT_TRUE(b_->AccumulateHessian(part, Mat{chunked.f32(), c, c, c}).ok());
  }
  EXPECT_LT(Nmse(Get<float>(chunked, c * c).data(), Get<float>(one, c * c).data(), c * c), 1e-10);
}

TEST_P(BackendOps, HessianSummedOverThreeShardsThenDividedEqualsSinglePass) {
  // Three "ranks" with different sample counts; sum of sums / total == mean.
  const int64_t c = 24, counts[3] = {50, 70, 33}, total = 153;
  const auto x = RandomNormal(total * c, 7);
  std::vector<float> summed(c * c, 0.0f);
  int64_t r0 = 0;
  for (int64_t cnt : counts) {
    Buffer dx = Put(std::vector<float>(x.begin() + r0 * c, x.begin() + (r0 + cnt) * c));
    Buffer dh = Put(std::vector<float>(c * c, 0.0f));
    ASSERT_TRUE(b_->AccumulateHessian(ActView{dx.data(), DType::kF32, cnt, c, c}, Mat{dh.f32(), c, c, c}).ok());
    const auto part = Get<float>(dh, c * c);
    for (int64_t i = 0; i < c * c; ++i) summed[i] += part[i];
    r0 += cnt;
  }
  auto ref = RefGram(x, total, c);
  for (auto& v : ref) v /= total;
  for (auto& v : summed) v /= total;
  EXPECT_LT(Nmse(summed.data(), ref.data(), c * c), 1e-10);
}

TEST_P(BackendOps, CholeskyInverseUpperFactorsTheInverse) {
  for (int64_t n : {1, 3, 17, 130}) {
    const auto x = RandomNormal((n + 10) * n, 8);
    auto h = RefGram(x, n + 10, n);
    for (int64_t i = 0; i < n; ++i) h[i * n + i] += 0.1f;
    Buffer dh = Put(h);
    ASSERT_TRUE(b_->CholeskyInverseUpper(Mat{dh.f32(), n, n, n}).ok());
    const auto u = Get<float>(dh, n * n);
    // U upper triangular and (U^T U) H == I.
    double err = 0;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < i; ++j) ASSERT_EQ(u[i * n + j], 0.0f);
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t k = 0; k < n; ++k) {
          double inv = 0;
          for (int64_t l = 0; l <= std::min(i, k); ++l) inv += double(u[l * n + i]) * u[l * n + k];
          s += inv * h[k * n + j];
        }
        err = std::max(err, std::abs(s - (i == j ? 1.0 : 0.0)));
      }
    }
    EXPECT_LT(err, 2e-3) << "n=" << n;
  }
  std::vector<float> indefinite = {1, 2, 2, 1};
  Buffer di = Put(indefinite);
  EXPECT_EQ(b_->CholeskyInverseUpper(Mat{di.f32(), 2, 2, 2}).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_P(BackendOps, PrepareDampenArgsortPermute) {
  const int64_t rows = 5, n = 37;
  auto h = RefGram(RandomNormal(60 * n, 9), 60, n);
  for (int64_t j = 0; j < n; ++j) h[4 * n + j] = h[j * n + 4] = 0;  // dead column 4
  h[10 * n + 10] = h[11 * n + 11];                                  // a tie
  const auto w = RandomNormal(rows * n, 10);
  Buffer dh = Put(h), dw = Put(w);
  const Mat mh{dh.f32(), n, n, n}, mw{dw.f32(), rows, n, n};
  ASSERT_TRUE(b_->PrepareHessian(mh, mw, 0.5f).ok());
  ASSERT_TRUE(b_->Dampen(mh, 0.01f).ok());
  auto hp = Get<float>(dh, n * n);
  const auto wp = Get<float>(dw, rows * n);
  double mean = 0;
  for (int64_t i = 0; i < n; ++i) mean += (i == 4 ? 1.0 : 0.5 * h[i * n + i]) / n;
  for (int64_t i = 0; i < n; ++i) {
    const double want = (i == 4 ? 1.0 : 0.5 * h[i * n + i]) + 0.01 * mean;
    EXPECT_NEAR(hp[i * n + i], want, 1e-5 * std::abs(want));
  }
  for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(wp[r * n + 4], 0.0f);
  Buffer perm = Put(std::vector<int32_t>(n));
  ASSERT_TRUE(b_->ArgsortDiagDescending(mh, perm.i32()).ok());
  const auto p = Get<int32_t>(perm, n);
  std::vector<int32_t> ref(n);
  std::iota(ref.begin(), ref.end(), 0);
  std::stable_sort(ref.begin(), ref.end(), [&](int a, int b) { return hp[a * n + a] > hp[b * n + b]; });
  EXPECT_EQ(p, ref);
  Buffer dst = Put(std::vector<float>(n * n)), wdst = Put(std::vector<float>(rows * n));
  ASSERT_TRUE(b_->PermuteSymmetric(mh, perm.i32(), Mat{dst.f32(), n, n, n}).ok());
  ASSERT_TRUE(b_->PermuteColumns(mw, perm.i32(), Mat{wdst.f32(), rows, n, n}).ok());
  const auto hs = Get<float>(dst, n * n), ws = Get<float>(wdst, rows * n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) ASSERT_EQ(hs[i * n + j], hp[p[i] * n + p[j]]);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) ASSERT_EQ(ws[r * n + j], wp[r * n + p[j]]);
  std::vector<int32_t> codes(rows * n);
  std::iota(codes.begin(), codes.end(), 0);
  Buffer dc = Put(codes), dcp = Put(std::vector<int32_t>(rows * n));
  ASSERT_TRUE(b_->PermuteColumnsI32(dc.i32(), rows, n, perm.i32(), dcp.i32()).ok());
  const auto cp = Get<int32_t>(dcp, rows * n);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) ASSERT_EQ(cp[r * n + j], codes[r * n + p[j]]);
}

TEST_P(BackendOps, GridAndRtnMatchTheSharedArithmetic) {
  const int64_t rows = 19, cols = 70;
  auto w = RandomNormal(rows * cols, 11);
  for (int64_t c = 0; c < cols; ++c) w[3 * cols + c] = 0.0f;          // all-zero row
  for (int64_t c = 0; c < cols; ++c) w[4 * cols + c] = std::abs(w[4 * cols + c]);  // no negatives
  for (int bits : {2, 3, 4, 8}) {
    for (bool sym : {true, false}) {
      for (bool mse : {false, true}) {
        Buffer dw = Put(w), ds = Put(std::vector<float>(rows)), dz = Put(std::vector<float>(rows));
        ASSERT_TRUE(b_->ComputeGrid(Mat{dw.f32(), rows, cols, cols}, GridSpec{bits, sym, mse},
                                    ds.f32(), dz.f32()).ok());
        const auto s = Get<float>(ds, rows), z = Get<float>(dz, rows);
        for (int64_t r = 0; r < rows; ++r) {
          float rs, rz;
          ComputeRowGrid(w.data() + r * cols, cols, 1, bits, sym, mse, &rs, &rz);
          EXPECT_NEAR(s[r], rs, 1e-6f * std::abs(rs)) << bits << sym << mse << " row " << r;
          EXPECT_EQ(z[r], rz);
        }
        Buffer cg = Put(std::vector<int32_t>(cols, 0)), codes = Put(std::vector<int32_t>(rows * cols));
        ASSERT_TRUE(b_->QuantizeRtn(Mat{dw.f32(), rows, cols, cols}, bits, cg.i32(), ds.f32(),
                                    dz.f32(), codes.i32()).ok());
        const auto q = Get<int32_t>(codes, rows * cols);
        const auto deq = Get<float>(dw, rows * cols);
        const float maxq = (1 << bits) - 1;
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < cols; ++c) {
            const float code = QuantCode(w[r * cols + c], s[r], z[r], maxq);
            ASSERT_EQ(q[r * cols + c], static_cast<int32_t>(code));
            ASSERT_FLOAT_EQ(deq[r * cols + c], Dequant(code, s[r], z[r]));
          }
        }
      }
    }
  }
}

TEST_P(BackendOps, SumIsExactEnough) {
  const auto x = RandomNormal(100003, 12);
  Buffer dx = Put(x);
  auto s = b_->Sum(dx.f32(), x.size());
  ASSERT_TRUE(s.ok());
  double ref = 0;
  for (float v : x) ref += v;
  EXPECT_NEAR(*s, ref, 1e-6 * std::abs(ref) + 1e-6);
}

// Hessian sums in fp64: assign, accumulate, round back to fp32 (round to nearest).
TEST_P(BackendOps, F64AccumulationAndRounding) {
  const auto a = RandomNormal(1001, 21), b = RandomNormal(1001, 22);
  Buffer da = Put(a), db = Put(b);
  auto acc = b_->Allocate(a.size() * sizeof(double));
  ASSERT_TRUE(acc.ok());
  auto* d = static_cast<double*>(acc->data());
  ASSERT_TRUE(b_->AddF32ToF64(da.f32(), d, a.size(), true).ok());
  ASSERT_TRUE(b_->AddF32ToF64(db.f32(), d, a.size(), false).ok());
  Buffer out = Put(std::vector<float>(a.size()));
  ASSERT_TRUE(b_->F64ToF32(d, out.f32(), a.size()).ok());
  std::vector<double> sums(a.size());
  std::vector<float> rounded(a.size());
  ASSERT_TRUE(b_->Download(d, sums.data(), sums.size() * sizeof(double)).ok());
  ASSERT_TRUE(b_->Download(out.f32(), rounded.data(), rounded.size() * sizeof(float)).ok());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(sums[i], double(a[i]) + double(b[i])) << i;
    ASSERT_EQ(rounded[i], static_cast<float>(sums[i])) << i;
  }
}

TEST_P(BackendOps, ShapeMisuseIsInvalidArgument) {
  Buffer a = Put(std::vector<float>(12));
  EXPECT_EQ(b_->Gemm(false, false, 1, Mat{a.f32(), 3, 4, 4}, Mat{a.f32(), 3, 4, 4}, 0,
                     Mat{a.f32(), 3, 4, 4}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(b_->CholeskyInverseUpper(Mat{a.f32(), 3, 4, 4}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(b_->AccumulateHessian(ActView{a.data(), DType::kI32, 3, 4, 4}, Mat{a.f32(), 3, 3, 3}).code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Backends, BackendOps,
                         ::testing::Values(DeviceKind::kCpu, DeviceKind::kCuda), KindName);

}  // namespace
}  // namespace dgptq::kernels
