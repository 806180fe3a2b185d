#include "common/dtype.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace dgptq {
namespace {

TEST(DTypeTest, NamesSizesAndParsing) {
  const DType all[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kI8,
                       DType::kI32, DType::kI64, DType::kU8,   DType::kBool};
  const size_t sizes[] = {4, 2, 2, 1, 4, 8, 1, 1};
  for (size_t i = 0; i < std::size(all); ++i) {
    EXPECT_EQ(DTypeSize(all[i]), sizes[i]);
    absl::StatusOr<DType> parsed = ParseDType(DTypeName(all[i]));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, all[i]);
  }
  EXPECT_TRUE(IsFloat(DType::kBF16));
  EXPECT_FALSE(IsFloat(DType::kI32));
  absl::StatusOr<DType> bad = ParseDType("F64");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("F64"), std::string_view::npos);
}

// Independent reference for binary16 -> double.
double HalfReference(uint16_t h) {
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  const double mag = exp == 0 ? std::ldexp(mant, -24) : std::ldexp(1024 + mant, exp - 25);
  return (h & 0x8000) ? -mag : mag;
}

TEST(DTypeTest, HalfExhaustiveRoundTrip) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = static_cast<uint16_t>(i);
    const float f = HalfToFloat(h);
    const int exp = (h >> 10) & 0x1f;
    if (exp == 0x1f && (h & 0x3ff) != 0) {
      ASSERT_TRUE(std::isnan(f)) << i;
      ASSERT_EQ(std::signbit(f), (h & 0x8000) != 0) << i;
      ASSERT_EQ(FloatToHalf(f), h | 0x0200) << i;  // payload kept, made quiet
      continue;
    }
    if (exp == 0x1f) {
      ASSERT_TRUE(std::isinf(f)) << i;
    } else {
      ASSERT_EQ(static_cast<double>(f), HalfReference(h)) << i;
    }
    ASSERT_EQ(FloatToHalf(f), h) << i;
  }
}

TEST(DTypeTest, BFloat16ExhaustiveRoundTrip) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t b = static_cast<uint16_t>(i);
    const float f = BFloat16ToFloat(b);
    const bool nan = (b & 0x7f80) == 0x7f80 && (b & 0x7f) != 0;
    if (nan) {
      ASSERT_TRUE(std::isnan(f)) << i;
      ASSERT_EQ(FloatToBFloat16(f), b | 0x40) << i;
      continue;
    }
    ASSERT_EQ(std::bit_cast<uint32_t>(f), static_cast<uint32_t>(b) << 16) << i;
    ASSERT_EQ(FloatToBFloat16(f), b) << i;
  }
}

// Every rounding boundary between consecutive finite values of a 16-bit format:
// the exact midpoint goes to the even neighbour, one float ulp either side to the
// nearer one. `widen` maps a positive 16-bit pattern to float.
template <typename Widen, typename Narrow>
void CheckAllMidpoints(uint16_t max_finite, Widen widen, Narrow narrow) {
  for (uint16_t a = 0; a < max_finite; ++a) {
    const uint16_t b = a + 1;
    const float fa = widen(a);
    const float fb = widen(b);
    const float mid = static_cast<float>((static_cast<double>(fa) + fb) / 2);
    ASSERT_EQ(static_cast<double>(mid), (static_cast<double>(fa) + fb) / 2) << a;
    ASSERT_EQ(narrow(mid), (a & 1) ? b : a) << a;
    ASSERT_EQ(narrow(std::nextafter(mid, 0.0f)), a) << a;
    ASSERT_EQ(narrow(std::nextafter(mid, std::numeric_limits<float>::infinity())), b) << a;
    ASSERT_EQ(narrow(-mid), ((a & 1) ? b : a) | 0x8000) << a;
  }
}

TEST(DTypeTest, HalfRoundsToNearestEvenEverywhere) {
  CheckAllMidpoints(0x7bff, HalfToFloat, FloatToHalf);
}

TEST(DTypeTest, BFloat16RoundsToNearestEvenEverywhere) {
  CheckAllMidpoints(0x7f7f, BFloat16ToFloat, FloatToBFloat16);
}

TEST(DTypeTest, HalfTiesAndSubnormals) {
  EXPECT_EQ(FloatToHalf(1.0f + 0x1p-11f), 0x3c00);      // tie, 0x3c00 is even
  EXPECT_EQ(FloatToHalf(1.0f + 3 * 0x1p-11f), 0x3c02);  // tie, 0x3c01 is odd
  EXPECT_EQ(FloatToHalf(0x1p-24f), 0x0001);             // smallest subnormal
  EXPECT_EQ(FloatToHalf(0x1p-25f), 0x0000);             // tie with zero
  EXPECT_EQ(FloatToHalf(std::nextafter(0x1p-25f, 1.0f)), 0x0001);
  EXPECT_EQ(FloatToHalf(3 * 0x1p-25f), 0x0002);
  EXPECT_EQ(FloatToHalf(0x1p-14f - 0x1p-25f), 0x0400);  // largest subnormal ties up to normal
  EXPECT_EQ(FloatToHalf(1e-30f), 0x0000);
  EXPECT_EQ(FloatToHalf(-1e-30f), 0x8000);
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(HalfToFloat(0x0001), 0x1p-24f);
  EXPECT_EQ(HalfToFloat(0x83ff), -1023 * 0x1p-24f);
}

TEST(DTypeTest, Overflow) {
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(std::nextafter(65520.0f, 0.0f)), 0x7bff);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);  // tie between 65504 and 2^16: even is inf
  EXPECT_EQ(FloatToHalf(1e10f), 0x7c00);
  EXPECT_EQ(FloatToHalf(-1e10f), 0xfc00);
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::max()), 0x7c00);
  EXPECT_EQ(FloatToBFloat16(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(FloatToBFloat16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(std::nanf("")))));
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(std::nanf("")))));
  // A NaN whose payload lives only in the dropped bits must not become infinity.
  const float low_payload_nan = std::bit_cast<float>(0x7f800001u);
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(low_payload_nan))));
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(low_payload_nan))));
}

TEST(DTypeTest, BulkConversionOnUnalignedBuffers) {
  const std::vector<float> values = {0.0f, -1.5f, 3.140625f, 65504.0f, -0x1p-24f, 1e-3f};
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
    std::vector<uint8_t> buf(values.size() * DTypeSize(t) + 1);
    ConvertFromF32(values.data(), t, buf.data() + 1, values.size());
    std::vector<float> back(values.size());
    ConvertToF32(t, buf.data() + 1, back.data(), values.size());
    for (size_t i = 0; i < values.size(); ++i) {
      float expected = values[i];
      if (t == DType::kF16) expected = HalfToFloat(FloatToHalf(values[i]));
      if (t == DType::kBF16) expected = BFloat16ToFloat(FloatToBFloat16(values[i]));
      EXPECT_EQ(back[i], expected) << DTypeName(t) << " " << i;
    }
  }
  ConvertToF32(DType::kF16, nullptr, nullptr, 0);  // n == 0 touches nothing
}

}  // namespace
}  // namespace dgptq
