// Layout facts implemented here, read from the reference sources (no code taken).
//
// Bit stream: both formats store b-bit fields little-endian along the packed dim; field i
// occupies bits [b*i, b*i + b) of consecutive int32 words (word b*i/32, shift b*i%32).
// For b = 2, 4, 8 that is 32/b fields per word, low bits first; for b = 3 it is GPTQ's
// layout of 32 fields in 3 words, where field 10 straddles words 0-1 (bits 30-31 + bit 0)
// and field 21 words 1-2 (bit 31 + bits 0-1). Sources: ModelCloud/GPTQModel
// gptqmodel/nn_modules/qlinear/__init__.py (pack_block: _pack_rows_2_4_8, _pack_rows_3,
// the numpy qzeros path; dequantize_weight: wf shift tables, fix-ups at fields 10 and 21)
// and vllm-project/vllm csrc/quantization/gptq/q_gemm.cu (reconstruct_gptq_kernel,
// reconstruct_gptq_3bit_kernel, make_sequential_3bit_kernel).
//
// GPTQ v1: qweight int32 [cols*b/32, rows] packed along cols (dim 0); qzeros int32
// [groups, rows*b/32] packed along rows, holding zero - 1; scales fp16 [groups, rows];
// g_idx int32 [cols]. Readers need whole words on both packed dims (GPTQModel pack_block
// wants in/out features divisible by 32), so cols*b and rows*b must be multiples of 32.
// Readers decode zero = field + 1 with no wrap (vLLM reconstruct_gptq*: `w_zeros_.item() +
// 1`), so v1 holds zeros in [1, 2^b] and an all-ones field decodes to 2^b. Zero 0 has no
// encoding: GPTQModel (gptqmodel/utils/model.py convert_gptq_v2_to_v1_format_module)
// subtracts 0x11111111 (4-bit) from whole words, so a 0 field borrows from its neighbour.
// PackGptq refuses it (InvalidArgument); UnpackGptq decodes all-ones fields as 2^b.
//
// compressed-tensors pack-quantized (vllm-project/compressed-tensors src/compressed_tensors/
// compressors/quantized_compressors/pack_quantized.py: pack_to_int32, unpack_from_int32,
// compress_weight): signed codes in [-2^(b-1), 2^(b-1)) are shifted by +2^(b-1) and packed
// 32//b per int32 along the last dim, low bits first, zero padded: weight_packed int32
// [rows, ceil(cols*b/32)]. Asym weight_zero_point (signed, = our zero - 2^(b-1)) is packed
// the same way along dim 0: int32 [ceil(rows*b/32), groups]. The shift makes each packed
// field equal our unsigned code / zero. Sym has no zero point (signed 0 = our 2^(b-1)).
// weight_scale [rows, groups] in the model dtype; weight_g_idx int32 [cols] (vLLM
// compressed_tensors_wNa16.py). weight_shape is torch.tensor(weight.shape), int64 [2], as
// vLLM allocates it: we write int64 and read int32 or int64. 3 bits: pack_to_int32 would
// put 10 fields per word, and the compressor's match_scheme and vLLM's WNA16 take only 4
// and 8 bits, so 3-bit is refused; 2-bit follows pack_to_int32.
#include "kernels/packing.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/quant_math.h"

namespace dgptq::kernels {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t GroupsFor(int group_size, int64_t cols) {
  return group_size == -1 ? 1 : CeilDiv(cols, group_size);
}
uint32_t Mask(int bits) { return (1u << bits) - 1u; }

absl::Status CheckBits(int bits, bool allow3) {
  if (bits == 2 || bits == 4 || bits == 8 || (bits == 3 && allow3)) return absl::OkStatus();
  if (bits == 3) {
    return absl::InvalidArgumentError(
        "compressed-tensors pack-quantized has no 3-bit layout (its compressor and vLLM take "
        "4 and 8 bits); write 3-bit weights as GPTQ");
  }
  return absl::InvalidArgumentError(absl::StrCat("bits must be 2, 3, 4 or 8, got ", bits));
}

std::string Name(DType t) { return std::string(DTypeName(t)); }
std::string Describe(const TensorView& v) {
  if (v.data == nullptr) return "no tensor";
  return absl::StrCat(Name(v.dtype), " ", ShapeString(v.shape));
}

// InvalidArgument naming `name` unless `v` is a present tensor of `dtype` (any float
// dtype when `dtype` is null) and `shape`.
absl::Status CheckTensor(const TensorView& v, absl::string_view name, const DType* dtype,
                         const Shape& shape) {
  const bool dtype_ok = dtype != nullptr ? v.dtype == *dtype : IsFloat(v.dtype);
  if (v.data != nullptr && dtype_ok && v.shape == shape) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(name, ": expected ",
                                                 dtype != nullptr ? Name(*dtype) : "float", " ",
                                                 ShapeString(shape), ", got ", Describe(v)));
}
constexpr DType kI32 = DType::kI32;

absl::Status CheckRank(const TensorView& v, absl::string_view name, size_t rank) {
  if (v.data != nullptr && v.shape.size() == rank) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(name, ": expected a ", rank, "-D tensor, got ", Describe(v)));
}

uint32_t StreamField(const uint32_t* words, int64_t i, int bits) {
  const int64_t bit = i * bits;
  const int shift = static_cast<int>(bit % 32);
  uint64_t v = words[bit / 32] >> shift;
  if (shift + bits > 32) v |= static_cast<uint64_t>(words[bit / 32 + 1]) << (32 - shift);
  return static_cast<uint32_t>(v) & Mask(bits);
}

uint32_t* Words(Tensor& t) { return reinterpret_cast<uint32_t*>(t.as<int32_t>()); }
const uint32_t* Words(const TensorView& v) { return static_cast<const uint32_t*>(v.data); }

// Packs `lines` bit streams (see top) of n fields, field(l, i), into the int32 tensor `out`
// laid out [lines, words] or, when `packed_dim0`, [words, lines]. Padding bits are 0.
template <typename FieldAt>
void PackLines(int64_t lines, int64_t n, int bits, bool packed_dim0, FieldAt field, Tensor& out) {
  const int64_t words = CeilDiv(n * bits, 32);
  std::vector<uint32_t> stream(words);
  uint32_t* m = Words(out);
  for (int64_t l = 0; l < lines; ++l) {
    std::fill(stream.begin(), stream.end(), 0u);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t bit = i * bits;
      const uint64_t v = static_cast<uint64_t>(field(l, i) & Mask(bits)) << (bit % 32);
      stream[bit / 32] |= static_cast<uint32_t>(v);
      if (bit % 32 + bits > 32) stream[bit / 32 + 1] |= static_cast<uint32_t>(v >> 32);
    }
    for (int64_t k = 0; k < words; ++k) m[packed_dim0 ? k * lines + l : l * words + k] = stream[k];
  }
}

// The inverse of PackLines: calls sink(l, i, field) for every field.
template <typename Sink>
void UnpackLines(const TensorView& v, int64_t lines, int64_t n, int bits, bool packed_dim0,
                 Sink sink) {
  const int64_t words = CeilDiv(n * bits, 32);
  std::vector<uint32_t> stream(words);
  const uint32_t* m = Words(v);
  for (int64_t l = 0; l < lines; ++l) {
    for (int64_t k = 0; k < words; ++k) stream[k] = m[packed_dim0 ? k * lines + l : l * words + k];
    for (int64_t i = 0; i < n; ++i) sink(l, i, StreamField(stream.data(), i, bits));
  }
}

// Whether g_idx is the mapping readers assume without one: column c in group c / size.
bool IsImplicitGIdx(const QuantizedWeight& q) {
  for (int64_t c = 0; c < q.cols; ++c) {
    const int64_t g = q.group_size == -1 ? 0 : c / q.group_size;
    if (q.g_idx[c] != g) return false;
  }
  return true;
}

// Group size of an unpacked GPTQ weight: its first group is full whenever there are two
// or more (with or without act-order), and -1 stands for a single group.
int InferGroupSize(const std::vector<int32_t>& g_idx, int64_t groups) {
  if (groups == 1) return -1;
  int count = 0;
  for (int32_t g : g_idx) count += g == 0;
  return count;
}

absl::Status ValidateValues(const QuantizedWeight& q) {
  const int64_t groups = q.groups();
  for (int64_t c = 0; c < q.cols; ++c) {
    if (q.g_idx[c] < 0 || q.g_idx[c] >= groups) {
      return absl::InvalidArgumentError(
          absl::StrCat("g_idx[", c, "] = ", q.g_idx[c], " outside [0, ", groups, ")"));
    }
  }
  const int32_t maxq = static_cast<int32_t>(Mask(q.bits));
  for (size_t i = 0; i < q.codes.size(); ++i) {
    if (q.codes[i] < 0 || q.codes[i] > maxq) {
      return absl::InvalidArgumentError(absl::StrCat("codes[", i / q.cols, ", ", i % q.cols,
                                                     "] = ", q.codes[i], " outside [0, ", maxq,
                                                     "] for ", q.bits, " bits"));
    }
  }
  // 2^bits is allowed: it is what a GPTQ v1 all-ones zero field decodes to.
  const float sym_zero = static_cast<float>(1 << (q.bits - 1));
  for (size_t i = 0; i < q.zeros.size(); ++i) {
    const float z = q.zeros[i];
    const bool ok =
        q.sym ? z == sym_zero : (std::floor(z) == z && z >= 0.0f && z <= float(1 << q.bits));
    if (!ok) {
      const std::string want = q.sym ? absl::StrCat(sym_zero, " (sym)")
                                     : absl::StrCat("an integer in [0, ", 1 << q.bits, "]");
      return absl::InvalidArgumentError(
          absl::StrCat("zeros[", i / q.rows, ", ", i % q.rows, "] = ", z, ", expected ", want));
    }
    if (!std::isfinite(q.scales[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("scales[", i / q.rows, ", ", i % q.rows, "] is not finite"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckCompressible(const QuantizedWeight& q, DType scale_dtype, bool with_g_idx) {
  DGPTQ_RETURN_IF_ERROR(q.Validate());
  DGPTQ_RETURN_IF_ERROR(CheckBits(q.bits, /*allow3=*/false));
  if (scale_dtype != DType::kF16 && scale_dtype != DType::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("scale dtype must be F16 or BF16, got ", Name(scale_dtype)));
  }
  if (!with_g_idx && !IsImplicitGIdx(q)) {
    return absl::InvalidArgumentError(
        "g_idx is not column / group_size (act-order); pass with_g_idx");
  }
  for (size_t i = 0; i < q.zeros.size(); ++i) {
    if (q.zeros[i] > static_cast<float>(Mask(q.bits))) {
      return absl::InvalidArgumentError(
          absl::StrCat("zeros[", i / q.rows, ", ", i % q.rows, "] = ", q.zeros[i],
                       " does not fit the signed ", q.bits, "-bit zero point"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Shape> ReadWeightShape(const TensorView& v) {
  if (v.data == nullptr || v.shape != Shape{2} ||
      (v.dtype != DType::kI64 && v.dtype != DType::kI32)) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight_shape: expected I64 (or I32) [2], got ", Describe(v)));
  }
  Shape s = v.dtype == DType::kI64 ? Shape{v.as<int64_t>()[0], v.as<int64_t>()[1]}
                                   : Shape{v.as<int32_t>()[0], v.as<int32_t>()[1]};
  if (s[0] <= 0 || s[1] <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight_shape: ", ShapeString(s), " is not a positive 2-D shape"));
  }
  return s;
}

}  // namespace

absl::Status QuantizedWeight::Validate() const {
  DGPTQ_RETURN_IF_ERROR(CheckBits(bits, /*allow3=*/true));
  if (rows <= 0 || cols <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("empty weight [", rows, ", ", cols, "]"));
  }
  if (group_size != -1 && group_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("group_size must be -1 or > 0, got ", group_size));
  }
  const int64_t g = GroupsFor(group_size, cols);
  const auto check_size = [](absl::string_view name, size_t got, int64_t want) {
    if (static_cast<int64_t>(got) == want) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat(name, " has ", got, " elements, expected ", want));
  };
  DGPTQ_RETURN_IF_ERROR(check_size("codes", codes.size(), rows * cols));
  DGPTQ_RETURN_IF_ERROR(check_size("scales", scales.size(), g * rows));
  DGPTQ_RETURN_IF_ERROR(check_size("zeros", zeros.size(), g * rows));
  DGPTQ_RETURN_IF_ERROR(check_size("g_idx", g_idx.size(), cols));
  return ValidateValues(*this);
}

Tensor QuantizedWeight::Dequantize() const {
  // Dequantizing an inconsistent weight is a programmer error (unpackers validate).
  if (absl::Status s = Validate(); !s.ok()) {
    std::fprintf(stderr, "QuantizedWeight::Dequantize: %s\n", std::string(s.message()).c_str());
    std::abort();
  }
  Tensor out(DType::kF32, {rows, cols});
  float* w = out.as<float>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t gr = static_cast<int64_t>(g_idx[c]) * rows + r;
      w[r * cols + c] = Dequant(static_cast<float>(codes[r * cols + c]), scales[gr], zeros[gr]);
    }
  }
  return out;
}

absl::StatusOr<GptqTensors> PackGptq(const QuantizedWeight& q) {
  DGPTQ_RETURN_IF_ERROR(q.Validate());
  if ((q.cols * q.bits) % 32 != 0 || (q.rows * q.bits) % 32 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPTQ packs whole int32 words along both dims; cols (", q.cols, ") and rows (",
                     q.rows, ") times ", q.bits, " bits must be multiples of 32"));
  }
  for (size_t i = 0; i < q.zeros.size(); ++i) {
    if (q.zeros[i] == 0.0f) {
      return absl::InvalidArgumentError(absl::StrCat(
          "zeros[", i / q.rows, ", ", i % q.rows, "] = 0 has no GPTQ v1 encoding (v1 stores ",
          "zero - 1; readers would decode ", 1 << q.bits, "); use sym or compressed-tensors"));
    }
  }
  const int64_t rows = q.rows, cols = q.cols, groups = q.groups();
  GptqTensors t{Tensor(kI32, {cols * q.bits / 32, rows}),
                Tensor(kI32, {groups, rows * q.bits / 32}), Tensor(DType::kF16, {groups, rows}),
                Tensor(kI32, {cols})};
  PackLines(
      rows, cols, q.bits, /*packed_dim0=*/true,
      [&](int64_t r, int64_t c) { return uint32_t(q.codes[r * cols + c]); }, t.qweight);
  PackLines(
      groups, rows, q.bits, /*packed_dim0=*/false,
      [&](int64_t g, int64_t r) { return uint32_t(q.zeros[g * rows + r]) - 1u; }, t.qzeros);
  ConvertFromF32(q.scales.data(), DType::kF16, t.scales.data(), q.scales.size());
  std::memcpy(t.g_idx.data(), q.g_idx.data(), cols * sizeof(int32_t));
  return t;
}

absl::StatusOr<QuantizedWeight> UnpackGptq(const TensorView& qweight, const TensorView& qzeros,
                                           const TensorView& scales, const TensorView& g_idx,
                                           int bits, bool sym) {
  DGPTQ_RETURN_IF_ERROR(CheckBits(bits, /*allow3=*/true));
  DGPTQ_RETURN_IF_ERROR(CheckRank(g_idx, "g_idx", 1));
  DGPTQ_RETURN_IF_ERROR(CheckRank(scales, "scales", 2));
  QuantizedWeight q;
  q.bits = bits;
  q.sym = sym;
  q.rows = scales.shape[1];
  q.cols = g_idx.shape[0];
  const int64_t groups = scales.shape[0];
  if ((q.cols * bits) % 32 != 0 || (q.rows * bits) % 32 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cols (", q.cols, ", from g_idx) and rows (",
                                                   q.rows, ", from scales) times ", bits,
                                                   " bits must be multiples of 32"));
  }
  DGPTQ_RETURN_IF_ERROR(CheckTensor(qweight, "qweight", &kI32, {q.cols * bits / 32, q.rows}));
  DGPTQ_RETURN_IF_ERROR(CheckTensor(qzeros, "qzeros", &kI32, {groups, q.rows * bits / 32}));
  DGPTQ_RETURN_IF_ERROR(CheckTensor(scales, "scales", nullptr, {groups, q.rows}));
  DGPTQ_RETURN_IF_ERROR(CheckTensor(g_idx, "g_idx", &kI32, {q.cols}));
  q.codes.resize(q.rows * q.cols);
  UnpackLines(qweight, q.rows, q.cols, bits, /*packed_dim0=*/true,
              [&](int64_t r, int64_t c, uint32_t v) { q.codes[r * q.cols + c] = int32_t(v); });
  // The v1 readers add 1 to the field with no wrap, so an all-ones field is 2^bits.
  q.zeros.resize(groups * q.rows);
  UnpackLines(qzeros, groups, q.rows, bits, /*packed_dim0=*/false,
              [&](int64_t g, int64_t r, uint32_t v) { q.zeros[g * q.rows + r] = float(v + 1); });
  q.scales.resize(groups * q.rows);
  ConvertToF32(scales.dtype, scales.data, q.scales.data(), q.scales.size());
  q.g_idx.assign(g_idx.as<int32_t>(), g_idx.as<int32_t>() + q.cols);
  q.group_size = InferGroupSize(q.g_idx, groups);
  DGPTQ_RETURN_IF_ERROR(q.Validate());
  return q;
}

absl::StatusOr<CompressedTensors> PackCompressed(const QuantizedWeight& q, DType scale_dtype,
                                                 bool with_g_idx) {
  DGPTQ_RETURN_IF_ERROR(CheckCompressible(q, scale_dtype, with_g_idx));
  const int64_t rows = q.rows, cols = q.cols, groups = q.groups();
  CompressedTensors t;
  t.weight_packed = Tensor(kI32, {rows, CeilDiv(cols * q.bits, 32)});
  PackLines(
      rows, cols, q.bits, /*packed_dim0=*/false,
      [&](int64_t r, int64_t c) { return uint32_t(q.codes[r * cols + c]); }, t.weight_packed);
  std::vector<float> scale_t(rows * groups);
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t r = 0; r < rows; ++r) scale_t[r * groups + g] = q.scales[g * rows + r];
  }
  t.weight_scale = Tensor(scale_dtype, {rows, groups});
  ConvertFromF32(scale_t.data(), scale_dtype, t.weight_scale.data(), scale_t.size());
  t.has_zero_point = !q.sym;
  if (t.has_zero_point) {
    t.weight_zero_point = Tensor(kI32, {CeilDiv(rows * q.bits, 32), groups});
    PackLines(
        groups, rows, q.bits, /*packed_dim0=*/true,
        [&](int64_t g, int64_t r) { return uint32_t(q.zeros[g * rows + r]); }, t.weight_zero_point);
  }
  t.weight_shape = Tensor(DType::kI64, {2});
  t.weight_shape.as<int64_t>()[0] = rows;
  t.weight_shape.as<int64_t>()[1] = cols;
  t.has_g_idx = with_g_idx;
  if (with_g_idx) {
    t.weight_g_idx = Tensor(kI32, {cols});
    std::memcpy(t.weight_g_idx.data(), q.g_idx.data(), cols * sizeof(int32_t));
  }
  return t;
}

absl::StatusOr<QuantizedWeight> UnpackCompressed(const TensorView& weight_packed,
                                                 const TensorView& weight_scale,
                                                 const TensorView& weight_zero_point,
                                                 const TensorView& weight_shape,
                                                 const TensorView& weight_g_idx, int bits,
                                                 int group_size, bool sym) {
  DGPTQ_RETURN_IF_ERROR(CheckBits(bits, /*allow3=*/false));
  if (group_size != -1 && group_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("group_size must be -1 or > 0, got ", group_size));
  }
  DGPTQ_ASSIGN_OR_RETURN(const Shape shape, ReadWeightShape(weight_shape));
  QuantizedWeight q;
  q.bits = bits;
  q.group_size = group_size;
  q.sym = sym;
  q.rows = shape[0];
  q.cols = shape[1];
  const int64_t groups = GroupsFor(group_size, q.cols);
  DGPTQ_RETURN_IF_ERROR(
      CheckTensor(weight_packed, "weight_packed", &kI32, {q.rows, CeilDiv(q.cols * bits, 32)}));
  DGPTQ_RETURN_IF_ERROR(CheckTensor(weight_scale, "weight_scale", nullptr, {q.rows, groups}));
  // A sym checkpoint has no zero point (vLLM's WNA16 scheme does not load one): ignore it.
  if (!sym) {
    DGPTQ_RETURN_IF_ERROR(CheckTensor(weight_zero_point, "weight_zero_point", &kI32,
                                      {CeilDiv(q.rows * bits, 32), groups}));
  }
  if (weight_g_idx.data != nullptr) {
    DGPTQ_RETURN_IF_ERROR(CheckTensor(weight_g_idx, "weight_g_idx", &kI32, {q.cols}));
  }
  q.codes.resize(q.rows * q.cols);
  UnpackLines(weight_packed, q.rows, q.cols, bits, /*packed_dim0=*/false,
              [&](int64_t r, int64_t c, uint32_t v) { q.codes[r * q.cols + c] = int32_t(v); });
  std::vector<float> scale_t(q.rows * groups);
  ConvertToF32(weight_scale.dtype, weight_scale.data, scale_t.data(), scale_t.size());
  q.scales.resize(groups * q.rows);
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t r = 0; r < q.rows; ++r) q.scales[g * q.rows + r] = scale_t[r * groups + g];
  }
  q.zeros.assign(groups * q.rows, static_cast<float>(1 << (bits - 1)));
  if (!sym) {
    UnpackLines(weight_zero_point, groups, q.rows, bits, /*packed_dim0=*/true,
                [&](int64_t g, int64_t r, uint32_t v) { q.zeros[g * q.rows + r] = float(v); });
  }
  q.g_idx.resize(q.cols);
  for (int64_t c = 0; c < q.cols; ++c) {
    q.g_idx[c] = weight_g_idx.data != nullptr ? weight_g_idx.as<int32_t>()[c]
                 : group_size == -1           ? 0
                                              : static_cast<int32_t>(c / group_size);
  }
  DGPTQ_RETURN_IF_ERROR(q.Validate());
  return q;
}

}  // namespace dgptq::kernels
