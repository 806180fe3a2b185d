#include "common/tensor.h"

#include <cstdint>
#include <cstring>

#include "gtest/gtest.h"

namespace dgptq {
namespace {

TEST(TensorTest, ShapeHelpers) {
  EXPECT_EQ(NumElements({}), 1);
  EXPECT_EQ(NumElements({2, 3}), 6);
  EXPECT_EQ(NumElements({4, 0, 7}), 0);
  EXPECT_EQ(ShapeString({2, 3}), "[2, 3]");
  EXPECT_EQ(ShapeString({}), "[]");
}

TEST(TensorTest, AlignedAndZeroFilled) {
  for (const Shape& shape : {Shape{3, 5}, Shape{}, Shape{0}, Shape{1, 33}}) {
    Tensor t(DType::kF16, shape);
    ASSERT_NE(t.data(), nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 64, 0u);
    EXPECT_EQ(t.nbytes(), static_cast<size_t>(NumElements(shape)) * 2);
    const auto* bytes = t.as<uint8_t>();
    for (size_t i = 0; i < t.nbytes(); ++i) ASSERT_EQ(bytes[i], 0) << i;
  }
}

TEST(TensorTest, CopyOfAndToF32) {
  const uint16_t bf16[] = {0x3f80, 0xc000, 0x0000, 0x4049};  // 1, -2, 0, 3.140625
  const TensorView v{DType::kBF16, {2, 2}, bf16};
  Tensor copy = Tensor::CopyOf(v);
  EXPECT_EQ(copy.dtype(), DType::kBF16);
  EXPECT_EQ(copy.shape(), (Shape{2, 2}));
  EXPECT_EQ(std::memcmp(copy.data(), bf16, sizeof(bf16)), 0);
  Tensor f = Tensor::ToF32(v);
  EXPECT_EQ(f.dtype(), DType::kF32);
  EXPECT_EQ(f.as<float>()[0], 1.0f);
  EXPECT_EQ(f.as<float>()[1], -2.0f);
  EXPECT_EQ(f.as<float>()[3], 3.140625f);
  Tensor moved = std::move(f);
  EXPECT_EQ(moved.view().as<float>()[1], -2.0f);
}

}  // namespace
}  // namespace dgptq
