// The model forward against transformers' reference logits and perplexities of the
// real checkpoints in ../shared/models (skipped when ../shared is absent).
#include <gtest/gtest.h>

#include <cmath>

#include "common/safetensors.h"
#include "common/token_data.h"
#include "tests/test_util.h"
#include "worker/model/eval.h"

namespace dgptq::worker {
namespace {

struct SharedModel {
  const char* name;
  double ppl;
};

class ReferenceModels : public ::testing::TestWithParam<std::tuple<SharedModel, kernels::DeviceKind>> {
 protected:
  void SetUp() override {
    shared_ = dgptq::testing::SharedDir();
    if (shared_.empty()) GTEST_SKIP() << "../shared is absent";
    auto b = kernels::MakeBackend(std::get<1>(GetParam()));
    if (!b.ok()) GTEST_SKIP() << b.status();
    b_ = std::move(b).value();
    dir_ = shared_ + "/models/" + std::get<0>(GetParam()).name;
  }
  std::string shared_, dir_;
  std::unique_ptr<kernels::Backend> b_;
};

TEST_P(ReferenceModels, LogitsMatchTransformers) {
  auto ref = SafetensorsFile::Open(dir_ + "/reference_logits.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto ids = (*ref)->Get("input_ids");
  auto want = (*ref)->Get("logits");
  ASSERT_TRUE(ids.ok() && want.ok());
  ASSERT_EQ(ids->dtype, DType::kI32);
  TokenWindows w{ids->shape[0], ids->shape[1],
                 std::vector<int32_t>(ids->as<int32_t>(), ids->as<int32_t>() + ids->numel())};
  auto reader = ModelReader::Open(dir_);
  ASSERT_TRUE(reader.ok()) << reader.status();
  auto got = ComputeLogits(*b_, **reader, w);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->numel(), want->numel());
  const float* g = got->as<float>();
  const float* r = want->as<float>();
  double max_abs = 0;
  for (int64_t i = 0; i < got->numel(); ++i) max_abs = std::max<double>(max_abs, std::abs(g[i] - r[i]));
  EXPECT_LE(dgptq::testing::Nmse(g, r, got->numel()), 1e-6);
  EXPECT_LE(max_abs, 1e-3);
}

TEST_P(ReferenceModels, PerplexityMatchesReadme) {
  auto windows = LoadTokenWindows(shared_ + "/data/tinystories/eval_windows_256.npy", nullptr, 256);
  ASSERT_TRUE(windows.ok()) << windows.status();
  auto reader = ModelReader::Open(dir_);
  ASSERT_TRUE(reader.ok()) << reader.status();
  auto res = EvaluatePerplexity(*b_, **reader, *windows, 64);
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->windows, 614);
  const double want = std::get<0>(GetParam()).ppl;
  EXPECT_NEAR(res->perplexity, want, 0.005 * want);
}

INSTANTIATE_TEST_SUITE_P(
    Shared, ReferenceModels,
    ::testing::Combine(::testing::Values(SharedModel{"stories260k-llama", 5.5950},
                                         SharedModel{"tinystories-llama-3m", 8.7990}),
                       ::testing::Values(kernels::DeviceKind::kCpu, kernels::DeviceKind::kCuda)),
    [](const auto& info) {
      std::string n = std::get<0>(info.param).name;
      for (char& ch : n) if (ch == '-') ch = '_';
      return n + (std::get<1>(info.param) == kernels::DeviceKind::kCpu ? "_cpu" : "_cuda");
    });

}  // namespace
}  // namespace dgptq::worker
