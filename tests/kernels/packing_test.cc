// Packing tests. The readers here are written from the published layouts (GPTQModel /
// vLLM reconstruct_gptq kernels for GPTQ v1, compressed-tensors unpack_from_int32) with
// per-field extraction, independently of the bit-stream code in kernels/packing.cc.
#include "kernels/packing.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/dtype.h"

namespace dgptq::kernels {
namespace {

using ::testing::HasSubstr;

// ---- Independent readers -------------------------------------------------------------

// Field i of a GPTQ packed stream whose k-th int32 word is word(k): 32/bits fields per
// word for 2/4/8 bits; for 3 bits 32 fields in 3 words with fields 10 and 21 split.
template <typename WordAt>
uint32_t GptqField(WordAt word, int64_t i, int bits) {
  if (bits != 3) {
    const int per = 32 / bits;
    return (word(i / per) >> (bits * (i % per))) & ((1u << bits) - 1);
  }
  const int64_t b = (i / 32) * 3;
  const int j = static_cast<int>(i % 32);
  if (j < 10) return (word(b) >> (3 * j)) & 7u;
  if (j == 10) return (word(b) >> 30) | ((word(b + 1) & 1u) << 2);
  if (j < 21) return (word(b + 1) >> (3 * j - 32)) & 7u;
  if (j == 21) return (word(b + 1) >> 31) | ((word(b + 2) & 3u) << 1);
  return (word(b + 2) >> (3 * j - 64)) & 7u;
}

uint32_t U32(const Tensor& t, int64_t i) { return static_cast<uint32_t>(t.as<int32_t>()[i]); }

// W[r, c] = scale * (q - (qzeros field + 1)), as vLLM's reconstruct_gptq kernels compute.
std::vector<float> ReadGptq(const GptqTensors& t, int bits) {
  const int64_t rows = t.qweight.dim(1), cols = t.g_idx.dim(0), zw = t.qzeros.dim(1);
  std::vector<float> w(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t g = t.g_idx.as<int32_t>()[c];
      const uint32_t q =
          GptqField([&](int64_t k) { return U32(t.qweight, k * rows + r); }, c, bits);
      const uint32_t z =
          GptqField([&](int64_t k) { return U32(t.qzeros, g * zw + k); }, r, bits) + 1;
      const float s = HalfToFloat(t.scales.as<uint16_t>()[g * rows + r]);
      w[r * cols + c] = s * (static_cast<float>(q) - static_cast<float>(z));
    }
  }
  return w;
}

// unpack_from_int32: signed = ((word >> bits*i) & mask) - 2^(bits-1), 32/bits per word.
int32_t CtSigned(const Tensor& packed, int64_t row, int64_t i, int bits, bool along_rows) {
  const int per = 32 / bits;
  const int64_t word = along_rows ? (i / per) * packed.dim(1) + row : row * packed.dim(1) + i / per;
  const uint32_t u = (U32(packed, word) >> (bits * (i % per))) & ((1u << bits) - 1);
  return static_cast<int32_t>(u) - (1 << (bits - 1));
}

float ScaleAt(const Tensor& s, int64_t i) {
  return s.dtype() == DType::kF16 ? HalfToFloat(s.as<uint16_t>()[i])
                                  : BFloat16ToFloat(s.as<uint16_t>()[i]);
}

std::vector<float> ReadCompressed(const CompressedTensors& t, int bits, int group_size) {
  const int64_t rows = t.weight_shape.as<int64_t>()[0], cols = t.weight_shape.as<int64_t>()[1];
  const int64_t groups = t.weight_scale.dim(1);
  std::vector<float> w(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t g = t.has_g_idx        ? t.weight_g_idx.as<int32_t>()[c]
                        : group_size == -1 ? 0
                                           : c / group_size;
      const int32_t q = CtSigned(t.weight_packed, r, c, bits, false);
      const int32_t z = t.has_zero_point ? CtSigned(t.weight_zero_point, g, r, bits, true) : 0;
      w[r * cols + c] = ScaleAt(t.weight_scale, r * groups + g) * static_cast<float>(q - z);
    }
  }
  return w;
}

// ---- Weights -------------------------------------------------------------------------

// Random weight; scales have 7 significant bits so they are exact in fp16 and bf16.
QuantizedWeight MakeWeight(int bits, bool sym, int group_size, int64_t rows, int64_t cols,
                           bool act_order, uint32_t seed) {
  std::mt19937 rng(seed);
  QuantizedWeight q;
  q.bits = bits;
  q.sym = sym;
  q.group_size = group_size;
  q.rows = rows;
  q.cols = cols;
  const int64_t groups = group_size == -1 ? 1 : (cols + group_size - 1) / group_size;
  const int maxq = (1 << bits) - 1;
  for (int64_t i = 0; i < rows * cols; ++i) q.codes.push_back(rng() % (maxq + 1));
  for (int64_t i = 0; i < groups * rows; ++i) {
    q.scales.push_back(
        std::ldexp(1.0f + static_cast<float>(rng() % 128) / 128.0f, -static_cast<int>(rng() % 12)));
    q.zeros.push_back(sym ? static_cast<float>(1 << (bits - 1))
                          : static_cast<float>(1 + rng() % maxq));
  }
  for (int64_t c = 0; c < cols; ++c) {
    q.g_idx.push_back(group_size == -1 ? 0 : static_cast<int32_t>(c / group_size));
  }
  if (act_order) std::shuffle(q.g_idx.begin(), q.g_idx.end(), rng);
  return q;
}

std::vector<float> ToVector(const Tensor& t) {
  return std::vector<float>(t.as<float>(), t.as<float>() + t.numel());
}

// InvalidArgument whose message contains `text`.
void ExpectInvalid(const absl::Status& s, const std::string& text) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr(text));
}

void ExpectSameWeight(const QuantizedWeight& a, const QuantizedWeight& b) {
  EXPECT_EQ(a.bits, b.bits);
  EXPECT_EQ(a.sym, b.sym);
  EXPECT_EQ(a.rows, b.rows);
  EXPECT_EQ(a.cols, b.cols);
  if (a.groups() > 1) {
    EXPECT_EQ(a.group_size, b.group_size);
  }
  EXPECT_EQ(a.codes, b.codes);
  EXPECT_EQ(a.scales, b.scales);
  EXPECT_EQ(a.zeros, b.zeros);
  EXPECT_EQ(a.g_idx, b.g_idx);
}

absl::StatusOr<QuantizedWeight> UnpackAll(const GptqTensors& t, int bits, bool sym) {
  return UnpackGptq(t.qweight.view(), t.qzeros.view(), t.scales.view(), t.g_idx.view(), bits, sym);
}

absl::StatusOr<QuantizedWeight> UnpackAll(const CompressedTensors& t, int bits, int group_size,
                                          bool sym) {
  return UnpackCompressed(t.weight_packed.view(), t.weight_scale.view(),
                          t.has_zero_point ? t.weight_zero_point.view() : TensorView{},
                          t.weight_shape.view(), t.has_g_idx ? t.weight_g_idx.view() : TensorView{},
                          bits, group_size, sym);
}

// ---- Golden examples -----------------------------------------------------------------

TEST(PackingGolden, Gptq4BitEightCodesPerWordLowBitsFirst) {
  QuantizedWeight q = MakeWeight(4, /*sym=*/true, -1, 8, 8, false, 1);
  for (int64_t r = 0; r < 8; ++r) {
    for (int64_t c = 0; c < 8; ++c) q.codes[r * 8 + c] = static_cast<int32_t>((c + r) % 16);
  }
  auto t = PackGptq(q);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->qweight.shape(), (Shape{1, 8}));
  EXPECT_EQ(U32(t->qweight, 0), 0x76543210u);  // row 0: codes 0..7 along cols
  EXPECT_EQ(U32(t->qweight, 1), 0x87654321u);  // row 1: codes 1..8
  EXPECT_EQ(t->qzeros.shape(), (Shape{1, 1}));
  EXPECT_EQ(U32(t->qzeros, 0), 0x77777777u);  // sym zero 8 stored as 7 in each nibble
  EXPECT_EQ(t->scales.dtype(), DType::kF16);
  EXPECT_EQ(t->scales.as<uint16_t>()[3], FloatToHalf(q.scales[3]));
}

TEST(PackingGolden, Gptq3BitFieldsStraddleWords) {
  QuantizedWeight q = MakeWeight(3, /*sym=*/true, -1, 32, 32, false, 2);
  std::fill(q.codes.begin(), q.codes.end(), 0);
  q.codes[0 * 32 + 10] = 5;  // 0b101: bits 30-31 of word 0 = 01, bit 0 of word 1 = 1
  q.codes[1 * 32 + 21] = 7;  // 0b111: bit 31 of word 1, bits 0-1 of word 2
  for (int c = 0; c < 32; ++c) q.codes[2 * 32 + c] = c % 8;
  auto t = PackGptq(q);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->qweight.shape(), (Shape{3, 32}));
  EXPECT_EQ(U32(t->qweight, 0 * 32 + 0), 1u << 30);
  EXPECT_EQ(U32(t->qweight, 1 * 32 + 0), 1u);
  EXPECT_EQ(U32(t->qweight, 2 * 32 + 0), 0u);
  EXPECT_EQ(U32(t->qweight, 0 * 32 + 1), 0u);
  EXPECT_EQ(U32(t->qweight, 1 * 32 + 1), 1u << 31);
  EXPECT_EQ(U32(t->qweight, 2 * 32 + 1), 3u);
  // sum_i (i % 8) << 3i over a 96-bit stream, split into words (computed by hand/bigint).
  EXPECT_EQ(U32(t->qweight, 0 * 32 + 2), 0x88fac688u);
  EXPECT_EQ(U32(t->qweight, 1 * 32 + 2), 0xc688fac6u);
  EXPECT_EQ(U32(t->qweight, 2 * 32 + 2), 0xfac688fau);
  // 32 zeros of 4 stored as 3 = 0b011 each.
  ASSERT_EQ(t->qzeros.shape(), (Shape{1, 3}));
  EXPECT_EQ(U32(t->qzeros, 0), 0xdb6db6dbu);
  EXPECT_EQ(U32(t->qzeros, 1), 0xb6db6db6u);
  EXPECT_EQ(U32(t->qzeros, 2), 0x6db6db6du);
}

TEST(PackingGolden, CompressedDocstringExample8Bit) {
  // pack_to_int32 docstring: signed [1, 2] -> unsigned [129, 130] -> 33409.
  QuantizedWeight q = MakeWeight(8, /*sym=*/true, -1, 1, 2, false, 3);
  q.codes = {129, 130};
  auto t = PackCompressed(q, DType::kBF16, false);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->weight_packed.shape(), (Shape{1, 1}));
  EXPECT_EQ(t->weight_packed.as<int32_t>()[0], 33409);
  EXPECT_EQ(t->weight_shape.dtype(), DType::kI64);
  EXPECT_EQ(t->weight_shape.as<int64_t>()[0], 1);
  EXPECT_EQ(t->weight_shape.as<int64_t>()[1], 2);
  EXPECT_FALSE(t->has_zero_point);
  EXPECT_FALSE(t->has_g_idx);
}

TEST(PackingGolden, Compressed4BitPaddingAndRowPackedZeroPoint) {
  QuantizedWeight q = MakeWeight(4, /*sym=*/false, -1, 3, 9, false, 4);
  for (int64_t r = 0; r < 3; ++r) {
    for (int64_t c = 0; c < 9; ++c) q.codes[r * 9 + c] = static_cast<int32_t>((c + r) % 16);
  }
  q.zeros = {1, 2, 3};  // signed -7, -6, -5; packed unsigned along rows
  auto t = PackCompressed(q, DType::kF16, false);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->weight_packed.shape(), (Shape{3, 2}));
  EXPECT_EQ(U32(t->weight_packed, 0), 0x76543210u);
  EXPECT_EQ(U32(t->weight_packed, 1), 0x8u);  // code 8, then zero padding
  EXPECT_EQ(U32(t->weight_packed, 2), 0x87654321u);
  EXPECT_EQ(U32(t->weight_packed, 5), 0xau);
  ASSERT_TRUE(t->has_zero_point);
  ASSERT_EQ(t->weight_zero_point.shape(), (Shape{1, 1}));
  EXPECT_EQ(U32(t->weight_zero_point, 0), 0x321u);
  EXPECT_EQ(t->weight_scale.shape(), (Shape{3, 1}));
}

TEST(PackingGolden, WeightPackedIsQweightTransposedForSymInt4) {
  const QuantizedWeight q = MakeWeight(4, /*sym=*/true, 32, 64, 256, false, 5);
  auto g = PackGptq(q);
  auto c = PackCompressed(q, DType::kF16, false);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_TRUE(c.ok()) << c.status();
  const int64_t kw = g->qweight.dim(0), rows = 64, groups = 8;
  ASSERT_EQ(c->weight_packed.shape(), (Shape{rows, kw}));
  ASSERT_EQ(c->weight_scale.shape(), (Shape{rows, groups}));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < kw; ++k) {
      ASSERT_EQ(c->weight_packed.as<int32_t>()[r * kw + k], g->qweight.as<int32_t>()[k * rows + r]);
    }
    for (int64_t gi = 0; gi < groups; ++gi) {
      ASSERT_EQ(c->weight_scale.as<uint16_t>()[r * groups + gi],
                g->scales.as<uint16_t>()[gi * rows + r]);
    }
  }
}

// ---- Round trips over bits, sym, group size, shapes and act-order ---------------------

using Case = std::tuple<int, bool, int, bool>;  // bits, sym, group_size, act_order

class PackingRoundTrip : public ::testing::TestWithParam<Case> {};

TEST_P(PackingRoundTrip, Gptq) {
  const auto [bits, sym, group_size, act_order] = GetParam();
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{32, 256}, {64, 688}, {96, 96}}) {
    SCOPED_TRACE(testing::Message() << "rows=" << rows << " cols=" << cols);
    const QuantizedWeight q = MakeWeight(bits, sym, group_size, rows, cols, act_order, 7);
    auto t = PackGptq(q);
    if ((cols * bits) % 32 != 0) {
      ExpectInvalid(t.status(), "multiples of 32");
      continue;
    }
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->qweight.shape(), (Shape{cols * bits / 32, rows}));
    EXPECT_EQ(ReadGptq(*t, bits), ToVector(q.Dequantize()));
    auto back = UnpackAll(*t, bits, sym);
    ASSERT_TRUE(back.ok()) << back.status();
    ExpectSameWeight(q, *back);
  }
}

TEST_P(PackingRoundTrip, Compressed) {
  const auto [bits, sym, group_size, act_order] = GetParam();
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 688}, {3, 688}, {5, 256}, {32, 7}}) {
    SCOPED_TRACE(testing::Message() << "rows=" << rows << " cols=" << cols);
    const QuantizedWeight q = MakeWeight(bits, sym, group_size, rows, cols, act_order, 11);
    for (DType dtype : {DType::kF16, DType::kBF16}) {
      auto t = PackCompressed(q, dtype, act_order);
      if (bits == 3) {
        ExpectInvalid(t.status(), "3-bit");
        continue;
      }
      ASSERT_TRUE(t.ok()) << t.status();
      EXPECT_EQ(t->weight_packed.shape(), (Shape{rows, (cols * bits + 31) / 32}));
      if (!sym) {
        EXPECT_EQ(t->weight_zero_point.dim(0), (rows * bits + 31) / 32);
      }
      EXPECT_EQ(ReadCompressed(*t, bits, group_size), ToVector(q.Dequantize()));
      auto back = UnpackAll(*t, bits, group_size, sym);
      ASSERT_TRUE(back.ok()) << back.status();
      ExpectSameWeight(q, *back);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, PackingRoundTrip,
                         ::testing::Combine(::testing::Values(2, 3, 4, 8), ::testing::Bool(),
                                            ::testing::Values(-1, 32, 128), ::testing::Bool()));

TEST(Packing, RaggedGroupsCount) {
  const QuantizedWeight q = MakeWeight(4, false, 128, 3, 688, false, 12);
  EXPECT_EQ(q.groups(), 6);
  ASSERT_TRUE(q.Validate().ok());
  auto t = PackCompressed(q, DType::kF16, false);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->weight_scale.shape(), (Shape{3, 6}));
  EXPECT_EQ(t->weight_zero_point.shape(), (Shape{1, 6}));
}

// ---- Zero points at the edges of the formats -------------------------------------------

TEST(Packing, GptqAllOnesZeroFieldDecodesToTwoToTheBits) {
  QuantizedWeight q = MakeWeight(4, /*sym=*/false, -1, 8, 32, false, 13);
  auto t = PackGptq(q);
  ASSERT_TRUE(t.ok()) << t.status();
  // What a writer produces from a zero of 0 by masking 0 - 1 to the field: 0xF in field 2.
  t->qzeros.as<int32_t>()[0] |= 0xF << 8;
  auto back = UnpackAll(*t, 4, false);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->zeros[2], 16.0f);
  EXPECT_EQ(ToVector(back->Dequantize()), ReadGptq(*t, 4));
  auto again = PackGptq(*back);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->qzeros.as<int32_t>()[0], t->qzeros.as<int32_t>()[0]);
  // 16 has no signed 4-bit compressed-tensors zero point.
  ExpectInvalid(PackCompressed(*back, DType::kF16, false).status(), "zeros[0, 2] = 16");
}

TEST(Packing, GptqRejectsZeroPointZero) {
  QuantizedWeight q = MakeWeight(4, /*sym=*/false, -1, 8, 32, false, 14);
  q.zeros[5] = 0.0f;
  ExpectInvalid(PackGptq(q).status(), "zeros[0, 5] = 0 has no GPTQ v1 encoding");
}

TEST(Packing, CompressedKeepsZeroPointZero) {
  QuantizedWeight q = MakeWeight(2, /*sym=*/false, 32, 5, 64, false, 15);
  q.zeros[0] = 0.0f;
  auto t = PackCompressed(q, DType::kF16, false);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(ReadCompressed(*t, 2, 32), ToVector(q.Dequantize()));
  auto back = UnpackAll(*t, 2, 32, false);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameWeight(q, *back);
}

// ---- Bad inputs ----------------------------------------------------------------------

TEST(PackingErrors, ValidateRejectsInconsistentWeights) {
  const QuantizedWeight good = MakeWeight(4, true, 32, 8, 64, false, 16);
  ASSERT_TRUE(good.Validate().ok());
  QuantizedWeight q = good;
  q.bits = 5;
  ExpectInvalid(q.Validate(), "bits must be 2, 3, 4 or 8");
  q = good;
  q.codes[3] = 16;
  ExpectInvalid(q.Validate(), "codes[0, 3] = 16");
  q = good;
  q.g_idx[1] = 2;
  ExpectInvalid(q.Validate(), "g_idx[1] = 2");
  q = good;
  q.scales.pop_back();
  ExpectInvalid(q.Validate(), "scales has 15 elements, expected 16");
  q = good;
  q.zeros[0] = 7.0f;
  ExpectInvalid(q.Validate(), "expected 8 (sym)");
  q = good;
  q.sym = false;
  q.zeros[0] = 2.5f;
  ExpectInvalid(q.Validate(), "zeros[0, 0] = 2.5");
  q = good;
  q.group_size = 16;
  ExpectInvalid(q.Validate(), "scales has 16 elements, expected 32");
  q = good;
  q.scales[0] = std::nanf("");
  ExpectInvalid(q.Validate(), "not finite");
}

TEST(PackingErrors, PackRejectsWhatTheFormatCannotHold) {
  ExpectInvalid(PackGptq(MakeWeight(4, true, -1, 3, 64, false, 17)).status(), "multiples of 32");
  const QuantizedWeight q = MakeWeight(4, true, 32, 8, 64, /*act_order=*/true, 18);
  ExpectInvalid(PackCompressed(q, DType::kF16, false).status(), "act-order");
  ExpectInvalid(PackCompressed(q, DType::kF32, true).status(), "F16 or BF16, got F32");
  QuantizedWeight bad = q;
  bad.codes[0] = -1;
  ExpectInvalid(PackGptq(bad).status(), "codes[0, 0] = -1");
  ExpectInvalid(PackCompressed(bad, DType::kF16, true).status(), "codes[0, 0] = -1");
}

TEST(PackingErrors, UnpackGptqNamesTensorAndShapes) {
  const QuantizedWeight q = MakeWeight(4, true, 32, 8, 64, false, 19);
  auto t = PackGptq(q);
  ASSERT_TRUE(t.ok());
  const TensorView qw = t->qweight.view(), qz = t->qzeros.view(), sc = t->scales.view();
  ExpectInvalid(UnpackGptq(sc, qz, sc, t->g_idx.view(), 4, true).status(),
                "qweight: expected I32 [8, 8], got F16 [2, 8]");
  ExpectInvalid(UnpackGptq(qw, qw, sc, t->g_idx.view(), 4, true).status(),
                "qzeros: expected I32 [2, 1], got I32 [8, 8]");
  ExpectInvalid(UnpackGptq(qw, qz, sc, TensorView{}, 4, true).status(), "g_idx: expected a 1-D");
  ExpectInvalid(UnpackAll(*t, 3, true).status(), "multiples of 32");
  ExpectInvalid(UnpackAll(*t, 6, true).status(), "bits must be");
  // A sym checkpoint whose zeros are not 2^(bits-1) - 1 is inconsistent.
  t->qzeros.as<int32_t>()[0] = 0x77777776;
  ExpectInvalid(UnpackAll(*t, 4, true).status(), "expected 8 (sym)");
}

TEST(PackingErrors, UnpackCompressedNamesTensorAndShapes) {
  const QuantizedWeight q = MakeWeight(4, false, 32, 5, 64, false, 20);
  auto t = PackCompressed(q, DType::kF16, false);
  ASSERT_TRUE(t.ok());
  const TensorView wp = t->weight_packed.view(), ws = t->weight_scale.view();
  const TensorView zp = t->weight_zero_point.view(), shape = t->weight_shape.view();
  ExpectInvalid(UnpackCompressed(wp, ws, TensorView{}, shape, TensorView{}, 4, 32, false).status(),
                "weight_zero_point: expected I32 [1, 2], got no tensor");
  ExpectInvalid(UnpackAll(*t, 4, 16, false).status(),
                "weight_scale: expected float [5, 4], got F16 [5, 2]");
  ExpectInvalid(UnpackAll(*t, 8, 32, false).status(),
                "weight_packed: expected I32 [5, 16], got I32 [5, 8]");
  ExpectInvalid(UnpackAll(*t, 3, 32, false).status(), "3-bit");
  const Tensor f32_shape(DType::kF32, {2});
  ExpectInvalid(UnpackCompressed(wp, ws, zp, f32_shape.view(), TensorView{}, 4, 32, false).status(),
                "weight_shape: expected I64 (or I32) [2], got F32 [2]");
  Tensor g_idx(DType::kI32, {64});
  g_idx.as<int32_t>()[3] = 9;
  ExpectInvalid(UnpackCompressed(wp, ws, zp, shape, g_idx.view(), 4, 32, false).status(),
                "g_idx[3] = 9");
}

TEST(PackingErrors, UnpackCompressedAcceptsInt32WeightShape) {
  const QuantizedWeight q = MakeWeight(8, true, -1, 3, 10, false, 21);
  auto t = PackCompressed(q, DType::kBF16, false);
  ASSERT_TRUE(t.ok());
  Tensor shape32(DType::kI32, {2});
  shape32.as<int32_t>()[0] = 3;
  shape32.as<int32_t>()[1] = 10;
  auto back = UnpackCompressed(t->weight_packed.view(), t->weight_scale.view(), TensorView{},
                               shape32.view(), TensorView{}, 8, -1, true);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameWeight(q, *back);
}

}  // namespace
}  // namespace dgptq::kernels
