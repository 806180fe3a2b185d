// Reads a Hugging Face checkpoint directory: an original one (no quantization_config) or a
// quantized one in GPTQ v1 or compressed-tensors pack-quantized format, as dgptq writes
// them (and, with the same layout, GPTQModel and llm-compressor). A dequantized (fake-quant)
// checkpoint reads as an original one: not quantized(), its fp32 `.weight`s loaded like any
// float weight; dequantized() returns its record. Weights follow the project convention
// W[rows = out_features, cols = in_features].
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "common/quant_config.h"
#include "common/safetensors.h"
#include "common/tensor.h"
#include "kernels/packing.h"
#include "worker/output/hf_quant_config.h"

namespace dgptq::worker {

// Not thread-safe (tensor data is mapped lazily on first use).
class ModelReader {
 public:
  // NotFound when `dir` has no config.json or weights; InvalidArgument for a malformed or
  // unsupported config (an unknown quant_method is named, a malformed dgptq_dequantized
  // record) or safetensors files.
  static absl::StatusOr<std::unique_ptr<ModelReader>> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  bool quantized() const { return info_.has_value(); }
  // kGptq or kCompressedTensors; nullopt when not quantized (dequantized included).
  std::optional<OutputFormat> format() const;
  // The settings a dequantized checkpoint was quantized with (its dgptq_dequantized
  // record); nullopt for any other checkpoint. It holds no codes to LoadQuantized().
  const std::optional<QuantConfig>& dequantized() const { return dequantized_; }
  // Parsed from quantization_config; the QuantConfig defaults when not quantized.
  const QuantConfig& quant() const;
  // Linear modules the checkpoint leaves unquantized: compressed-tensors `ignore`; for
  // GPTQ the exact-name `dynamic` exclusions, plus "lm_head" when it is stored plainly.
  std::vector<std::string> ignore() const;

  std::vector<std::string> TensorNames() const;
  bool HasTensor(const std::string& name) const;
  // Quantized modules (e.g. "model.layers.0.mlp.up_proj"), sorted.
  std::vector<std::string> QuantizedModules() const;
  // Tensors that are not part of a quantized module's packed weight (embeddings, norms,
  // lm_head, biases), sorted.
  std::vector<std::string> PlainTensors() const;

  // A tensor as stored (a view valid while the reader lives). NotFound naming it.
  absl::StatusOr<TensorView> Raw(const std::string& name);
  // Unpacks quantized `module`. NotFound when it is not quantized in this checkpoint;
  // InvalidArgument for tensors inconsistent with the layout or the config.
  absl::StatusOr<kernels::QuantizedWeight> LoadQuantized(const std::string& module);
  // fp32 [rows, cols] of "<module>.weight": dequantized when the module is quantized,
  // converted from its stored float dtype otherwise.
  absl::StatusOr<Tensor> LoadWeightF32(const std::string& weight_name);

 private:
  ModelReader() = default;
  bool IsQuantizedModule(const std::string& module) const;
  absl::StatusOr<kernels::QuantizedWeight> LoadGptq(const std::string& module);
  absl::StatusOr<kernels::QuantizedWeight> LoadCompressed(const std::string& module);

  std::string dir_;
  ModelConfig config_;
  std::optional<HfQuantInfo> info_;
  std::optional<QuantConfig> dequantized_;
  QuantConfig default_quant_;
  std::unique_ptr<Checkpoint> checkpoint_;
};

}  // namespace dgptq::worker
