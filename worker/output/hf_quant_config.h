// The `quantization_config` of a quantized Hugging Face checkpoint, in the two packed
// formats dgptq writes (GPTQ v1 and compressed-tensors pack-quantized): building it for
// the writer and parsing it for the reader; and the `dgptq_dequantized` record of the
// third, dequantized (fake-quant) format, which has no quantization_config. The key sets
// and their sources are documented in hf_quant_config.cc. JSON travels as text so
// nlohmann stays in the .cc files.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/dtype.h"
#include "common/quant_config.h"
#include "kernels/packing.h"

namespace dgptq::worker {

// kDequantized: fp32 weights scale * (code - zero) of every quantized linear, in a plain
// (unquantized) checkpoint; any bits, groups and shapes, but no codes to convert back.
enum class OutputFormat { kGptq, kCompressedTensors, kDequantized };

// "gptq", "compressed-tensors" or "dequantized"; InvalidArgument naming the value
// otherwise.
absl::StatusOr<OutputFormat> ParseOutputFormat(absl::string_view name);
// The inverse of ParseOutputFormat.
const char* OutputFormatName(OutputFormat f);

// What a checkpoint's quantization_config says (format is kGptq or kCompressedTensors).
struct HfQuantInfo {
  OutputFormat format = OutputFormat::kGptq;
  QuantConfig quant;                // bits, group_size, sym, act_order, static_groups, damp_percent
  bool lm_head_quantized = false;   // GPTQ `lm_head`
  std::vector<std::string> ignore;  // linear modules left unquantized
};

// compressed-tensors activation ordering: "weight" (static groups, groups fixed before
// the permutation, no g_idx stored) or "group" (groups in permuted order, g_idx stored).
enum class CtActOrder { kNone, kWeight, kGroup };
CtActOrder CtActOrderOf(const QuantConfig& q);
// GPTQ `desc_act`: true only when g_idx may be permuted (act-order with dynamic groups).
bool GptqDescAct(const QuantConfig& q);
// Whether q.g_idx[c] == c / group_size (0 for per channel) for every column.
bool IsImplicitGIdx(const kernels::QuantizedWeight& q);

// The dtype a format stores scales in: F16 for GPTQ, the model dtype (F16 or BF16) for
// compressed-tensors; nullopt for the dequantized format (it stores fp32 weights).
std::optional<DType> StoredScaleDType(OutputFormat f, DType model_dtype);
// Rounds q's scales to `dtype` (kF16 or kBF16), so q dequantizes to exactly what a reader
// of the stored checkpoint gets.
void RoundScales(kernels::QuantizedWeight* q, DType dtype);
// The tensor whose presence in a checkpoint of format `f` shows `module` was written:
// <module>.qweight, .weight_packed or .weight.
std::string StoredTensorName(OutputFormat f, const std::string& module);

// The quantization_config object as JSON text. `quantizer` is "dgptq:<version>".
// info.format must be kGptq or kCompressedTensors.
std::string BuildQuantizationConfig(const HfQuantInfo& info, const std::string& quantizer);

// Parses config.json text (and quantize_config.json text, "" when absent, used when
// config.json has no quantization_config as in older AutoGPTQ checkpoints). nullopt for
// an unquantized checkpoint. InvalidArgument naming `source` for malformed JSON, an
// unknown quant_method (named), an unsupported checkpoint_format or compressed-tensors
// format, or missing / mistyped keys.
absl::StatusOr<std::optional<HfQuantInfo>> ParseQuantizationConfig(
    const std::string& config_json, const std::string& quantize_config_json,
    const std::string& source);

// The config.json key of the dequantized format's record.
inline constexpr char kDequantizedKey[] = "dgptq_dequantized";
// The record as JSON text: {"bits", "group_size", "sym", "act_order", "static_groups"}.
std::string BuildDequantizedRecord(const QuantConfig& q);
// The record in config.json text; nullopt when absent (any other checkpoint).
// InvalidArgument naming `source` for malformed JSON or a record that is not an object
// of those keys with valid values. Fields it does not hold keep QuantConfig defaults.
absl::StatusOr<std::optional<QuantConfig>> ParseDequantizedRecord(const std::string& config_json,
                                                                  const std::string& source);

}  // namespace dgptq::worker
