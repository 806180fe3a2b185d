// The module benchmark's straightforward GPTQ (bench/gptq_columnwise.h) is only a fair
// yardstick if it computes the same thing: its codes against the independent host
// reference (tests/worker/gptq_reference.h) and against RunGptq, on every backend here.
#include "bench/gptq_columnwise.h"

#include <gtest/gtest.h>

#include "tests/test_util.h"
#include "tests/worker/gptq_reference.h"
#include "worker/gptq/gptq.h"

namespace dgptq::bench {
namespace {

using kernels::DeviceKind;
using kernels::Mat;

struct Case {
  int64_t rows, cols;
  int group;
  bool act, stat;
};

class Columnwise : public ::testing::TestWithParam<std::tuple<DeviceKind, Case>> {};

TEST_P(Columnwise, AgreesWithTheReferenceAndWithRunGptq) {
  const auto& [kind, c] = GetParam();
  auto made = kernels::MakeBackend(kind);
  if (!made.ok()) GTEST_SKIP() << "no CUDA device available";
  kernels::Backend& b = **made;
  const std::vector<float> w = testing::RandomNormal(c.rows * c.cols, 5 + c.cols, 0.05f);
  const int64_t n = 8 * c.cols + 8;
  const std::vector<float> h =
      testing::Gram(testing::CorrelatedActivations(n, c.cols, 9 + c.rows), n, c.cols);
  QuantConfig cfg;
  cfg.group_size = c.group;
  cfg.act_order = c.act;
  cfg.static_groups = c.stat;

  auto wd = b.Allocate(w.size() * 4), hd = b.Allocate(h.size() * 4);
  ASSERT_TRUE(wd.ok() && hd.ok());
  ASSERT_TRUE(b.Upload(w.data(), wd->data(), w.size() * 4).ok());
  ASSERT_TRUE(b.Upload(h.data(), hd->data(), h.size() * 4).ok());
  auto col = RunGptqColumnwise(b, Mat{wd->f32(), c.rows, c.cols, c.cols},
                               Mat{hd->f32(), c.cols, c.cols, c.cols}, n, cfg);
  ASSERT_TRUE(col.ok()) << col.status();
  ASSERT_EQ(col->codes.size(), w.size());

  const auto ref = testing::RefGptq(w, h, c.rows, c.cols, n, cfg);
  size_t differ = 0;  // outside rounding ties (see gptq_test.cc)
  for (size_t i = 0; i < w.size(); ++i) differ += ref.codes[i] != col->codes[i] && !ref.tie[i];
  EXPECT_LE(differ, w.size() / 100) << "codes differing from the host reference: " << differ;

  auto ours = worker::QuantizeModuleGptq(b, TensorView{DType::kF32, {c.rows, c.cols}, w.data()},
                                         TensorView{DType::kF32, {c.cols, c.cols}, h.data()}, n, cfg);
  ASSERT_TRUE(ours.ok()) << ours.status();
  EXPECT_GE(CodesAgreement(ours->q.codes, col->codes), 0.99);
}

TEST(Columnwise, RefusesAHessianOfAnotherSize) {
  auto b = kernels::MakeCpuBackend();
  auto wd = b->Allocate(4 * 8 * 4), hd = b->Allocate(6 * 6 * 4);
  ASSERT_TRUE(wd.ok() && hd.ok());
  auto r = RunGptqColumnwise(*b, Mat{wd->f32(), 4, 8, 8}, Mat{hd->f32(), 6, 6, 6}, 10, QuantConfig{});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Columnwise, CodesAgreement) {
  EXPECT_EQ(CodesAgreement({}, {}), 1.0);
  EXPECT_EQ(CodesAgreement({1, 2, 3, 4}, {1, 2, 0, 4}), 0.75);
  EXPECT_EQ(CodesAgreement({1, 2}, {1, 2, 3}), 0.0);
}

const Case kCases[] = {
    {1, 1, -1, false, false},   {3, 5, -1, true, false},    {33, 257, 128, true, false},
    {48, 130, 32, false, false}, {48, 130, 32, true, true}, {25, 200, 64, true, false},
};

std::string Name(const ::testing::TestParamInfo<std::tuple<DeviceKind, Case>>& info) {
  const auto& [kind, c] = info.param;
  return std::string(kind == DeviceKind::kCpu ? "cpu" : "cuda") + "_r" + std::to_string(c.rows) +
         "_c" + std::to_string(c.cols) + "_g" + (c.group < 0 ? "m1" : std::to_string(c.group)) +
         (c.act ? "_act" : "") + (c.stat ? "_static" : "");
}

INSTANTIATE_TEST_SUITE_P(Shapes, Columnwise,
                         ::testing::Combine(::testing::Values(DeviceKind::kCpu, DeviceKind::kCuda),
                                            ::testing::ValuesIn(kCases)),
                         Name);

}  // namespace
}  // namespace dgptq::bench
