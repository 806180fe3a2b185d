// Element types of tensors on disk and in memory, and exact fp16/bf16 conversions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"

namespace dgptq {

enum class DType : uint8_t { kF32, kF16, kBF16, kI8, kI32, kI64, kU8, kBool };

// Bytes per element.
size_t DTypeSize(DType t);
// The safetensors name ("F32", "F16", "BF16", "I8", "I32", "I64", "U8", "BOOL").
std::string_view DTypeName(DType t);
// Parses a safetensors dtype name; InvalidArgument for anything else.
absl::StatusOr<DType> ParseDType(std::string_view name);
bool IsFloat(DType t);

// IEEE binary16 / bfloat16 <-> binary32. Narrowing rounds to nearest, ties to even;
// NaN stays NaN, overflow becomes infinity, subnormals are exact.
uint16_t FloatToHalf(float f);
float HalfToFloat(uint16_t h);
uint16_t FloatToBFloat16(float f);
float BFloat16ToFloat(uint16_t b);

// Converts `n` elements of float dtype `src_type` at `src` into fp32 at `dst`.
// src_type must be kF32, kF16 or kBF16 (a programmer invariant).
void ConvertToF32(DType src_type, const void* src, float* dst, size_t n);
// Converts `n` fp32 values into `dst_type` (kF32, kF16, kBF16).
void ConvertFromF32(const float* src, DType dst_type, void* dst, size_t n);

}  // namespace dgptq
