#include "common/dtype.h"

#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace dgptq {
namespace {

[[noreturn]] void DieBadDType(const char* where, DType t) {
  std::fprintf(stderr, "dgptq: %s called with unsupported dtype %d\n", where, static_cast<int>(t));
  std::abort();
}

}  // namespace

size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kI64:
      return 8;
    case DType::kI8:
    case DType::kU8:
    case DType::kBool:
      return 1;
  }
  DieBadDType("DTypeSize", t);
}

std::string_view DTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kI8:
      return "I8";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
    case DType::kU8:
      return "U8";
    case DType::kBool:
      return "BOOL";
  }
  DieBadDType("DTypeName", t);
}

absl::StatusOr<DType> ParseDType(std::string_view name) {
  static constexpr DType kAll[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kI8,
                                   DType::kI32, DType::kI64, DType::kU8,   DType::kBool};
  for (DType t : kAll) {
    if (DTypeName(t) == name) return t;
  }
  // Cap the echoed name: it comes from untrusted file headers.
  return absl::InvalidArgumentError("unknown dtype '" + std::string(name.substr(0, 64)) +
                                    "' (supported: F32, F16, BF16, I8, I32, I64, U8, BOOL)");
}

bool IsFloat(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }

uint16_t FloatToHalf(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) {  // NaN: keep the top payload bits, force the quiet bit.
    return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  }
  // 65520 is halfway between 65504 (largest half) and 65536: ties to even give inf.
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  const uint32_t exp = abs >> 23;  // biased binary32 exponent
  uint32_t mant = abs & 0x7fffffu;
  uint32_t shift;
  uint32_t base;
  if (exp >= 113) {  // normal half (unbiased exponent >= -14)
    base = (exp - 112) << 10;
    shift = 13;
  } else {
    // Subnormal half, in units of 2^-24: value = (1.mant) * 2^(exp-127) = m >> (126 - exp).
    // Below 2^-25 (exp < 102) everything rounds to zero (no exact tie is possible there).
    if (exp < 102) return sign;
    mant |= 0x800000u;
    base = 0;
    shift = 126 - exp;
  }
  uint32_t h = base + (mant >> shift);
  const uint32_t rem = mant & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  // Round to nearest, ties to even. A carry into the exponent field is the right result
  // (largest subnormal -> smallest normal, mantissa overflow -> next binade).
  if (rem > half || (rem == half && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) {
    // Infinity, or NaN made quiet (as the hardware converters do), payload kept.
    const uint32_t quiet = mant != 0 ? 0x400000u : 0u;
    return std::bit_cast<float>(sign | 0x7f800000u | quiet | (mant << 13));
  }
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24 is exact in binary32.
    const float mag = static_cast<float>(mant) * 0x1p-24f;
    return std::bit_cast<float>(sign | std::bit_cast<uint32_t>(mag));
  }
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t FloatToBFloat16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) {
    return static_cast<uint16_t>((x >> 16) | 0x40u);  // NaN stays NaN, made quiet
  }
  // Round to nearest even on the 16 dropped bits; overflow carries into infinity.
  const uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>((x + rounding) >> 16);
}

float BFloat16ToFloat(uint16_t b) {
  uint32_t x = static_cast<uint32_t>(b) << 16;
  if ((x & 0x7fffffffu) > 0x7f800000u) x |= 0x400000u;  // quiet NaN
  return std::bit_cast<float>(x);
}

// Element loops go through memcpy: safetensors data sections give no alignment guarantee.
void ConvertToF32(DType src_type, const void* src, float* dst, size_t n) {
  const auto* bytes = static_cast<const uint8_t*>(src);
  switch (src_type) {
    case DType::kF32:
      if (n > 0) std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kF16:
    case DType::kBF16: {
      const bool half = src_type == DType::kF16;
      for (size_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, bytes + 2 * i, 2);
        dst[i] = half ? HalfToFloat(v) : BFloat16ToFloat(v);
      }
      return;
    }
    default:
      DieBadDType("ConvertToF32", src_type);
  }
}

void ConvertFromF32(const float* src, DType dst_type, void* dst, size_t n) {
  auto* bytes = static_cast<uint8_t*>(dst);
  switch (dst_type) {
    case DType::kF32:
      if (n > 0) std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kF16:
    case DType::kBF16: {
      const bool half = dst_type == DType::kF16;
      for (size_t i = 0; i < n; ++i) {
        const uint16_t v = half ? FloatToHalf(src[i]) : FloatToBFloat16(src[i]);
        std::memcpy(bytes + 2 * i, &v, 2);
      }
      return;
    }
    default:
      DieBadDType("ConvertFromF32", dst_type);
  }
}

}  // namespace dgptq
