// Packing quantized weights into the on-disk layouts vLLM and transformers read,
// and unpacking them back (host side, exact integer work).
//
// Conventions: a linear weight is W[rows = out_features, cols = in_features].
// A QuantizedWeight holds integer codes q in [0, 2^bits - 1] with
// W'[r, c] = scales[g_idx[c], r] * (codes[r, c] - zeros[g_idx[c], r]).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tensor.h"

namespace dgptq::kernels {

struct QuantizedWeight {
  int bits = 4;
  int group_size = 128;  // -1: per channel
  bool sym = true;
  int64_t rows = 0;  // out_features
  int64_t cols = 0;  // in_features
  std::vector<int32_t> codes;   // [rows, cols]
  std::vector<float> scales;    // [groups, rows]
  std::vector<float> zeros;     // [groups, rows], integer-valued
  std::vector<int32_t> g_idx;   // [cols], group of each input column
  int64_t groups() const { return rows == 0 ? 0 : static_cast<int64_t>(scales.size()) / rows; }
  // Dequantized fp32 weight [rows, cols].
  Tensor Dequantize() const;
  // InvalidArgument if sizes, code ranges or g_idx values are inconsistent.
  absl::Status Validate() const;
};

// GPTQ v1 (AutoGPTQ / GPTQModel "gptq" checkpoint_format) tensors of one linear.
struct GptqTensors {
  Tensor qweight;  // int32 [cols * bits / 32, rows]
  Tensor qzeros;   // int32 [groups, rows * bits / 32], stores zero - 1
  Tensor scales;   // fp16 [groups, rows]
  Tensor g_idx;    // int32 [cols]
};
absl::StatusOr<GptqTensors> PackGptq(const QuantizedWeight& q);
absl::StatusOr<QuantizedWeight> UnpackGptq(const TensorView& qweight, const TensorView& qzeros,
                                           const TensorView& scales, const TensorView& g_idx,
                                           int bits, bool sym);

// compressed-tensors "pack-quantized" tensors of one linear.
struct CompressedTensors {
  Tensor weight_packed;      // int32 [rows, ceil(cols * bits / 32)]
  Tensor weight_scale;       // fp16/bf16 [rows, groups]
  Tensor weight_zero_point;  // int32 [ceil(rows*bits/32), groups]; only when !sym
  Tensor weight_shape;       // int64 [2] = {rows, cols} (what compressed-tensors writes)
  Tensor weight_g_idx;       // int32 [cols]; only with act-order
  bool has_zero_point = false;
  bool has_g_idx = false;
};
// `scale_dtype` is the model's dtype (kF16 or kBF16).
absl::StatusOr<CompressedTensors> PackCompressed(const QuantizedWeight& q, DType scale_dtype,
                                                 bool with_g_idx);
// `weight_zero_point` / `weight_g_idx` may be null views (data == nullptr).
absl::StatusOr<QuantizedWeight> UnpackCompressed(const TensorView& weight_packed,
                                                 const TensorView& weight_scale,
                                                 const TensorView& weight_zero_point,
                                                 const TensorView& weight_shape,
                                                 const TensorView& weight_g_idx, int bits,
                                                 int group_size, bool sym);

}  // namespace dgptq::kernels
