// Writes a quantized Hugging Face checkpoint that vLLM and transformers load as is, in
// GPTQ (v1) or compressed-tensors pack-quantized format (DESIGN.md "Formats"), or a
// dequantized (fake-quant) one: each quantized linear's `<module>.weight` stored as the
// fp32 values scale * (code - zero), exactly QuantizedWeight::Dequantize(), in a plain
// checkpoint with no quantization_config. It evaluates what GPTQ produced for any bits,
// groups and shapes (3 bits, rows or cols that no int32 packing divides), at fp32 size.
//
// Everything is staged in a sibling directory `<out_dir>.partial-<pid>`; Finish() moves
// it under `out_dir` with one rename, so a crash or an error never leaves a half-written
// checkpoint under the final name. Weights follow the project convention
// W[rows = out_features, cols = in_features].
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "common/quant_config.h"
#include "common/safetensors_writer.h"
#include "common/tensor.h"
#include "kernels/packing.h"
#include "worker/output/hf_quant_config.h"

namespace dgptq::worker {

// OutputFormat and ParseOutputFormat() come from worker/output/hf_quant_config.h.

struct WriterOptions {
  std::string out_dir;
  std::string src_model_dir;  // config.json and tokenizer files are taken from here
  OutputFormat format = OutputFormat::kGptq;
  QuantConfig quant;  // bits, group_size, sym, act_order, static_groups, damp_percent
  // Dtype of compressed-tensors weight_scale: kF16 or kBF16 (llm-compressor stores the
  // model dtype). GPTQ scales are always fp16; unused by the dequantized format.
  DType model_dtype = DType::kBF16;
  bool overwrite = false;
  uint64_t max_shard_bytes = 4ull << 30;
  // Linear modules left unquantized (e.g. "lm_head"): compressed-tensors `ignore`; for
  // GPTQ a `dynamic` "-:" exclusion per module other than lm_head; for dequantized only
  // refused by AddQuantized.
  std::vector<std::string> ignore;
};

// Not thread-safe: one writer is driven by one thread.
class ModelWriter {
 public:
  // InvalidArgument for bad options (empty or equal directories, a bad QuantConfig,
  // 3-bit compressed-tensors, a compressed-tensors scale dtype other than F16/BF16);
  // NotFound when
  // src_model_dir has no config.json; FailedPrecondition when out_dir exists and is
  // not empty (holds a model) and overwrite is false.
  static absl::StatusOr<std::unique_ptr<ModelWriter>> Create(const WriterOptions& opts);
  // Removes the staging directory unless Finish() succeeded.
  ~ModelWriter();
  ModelWriter(const ModelWriter&) = delete;
  ModelWriter& operator=(const ModelWriter&) = delete;

  // Appends one quantized linear `module` (e.g. "model.layers.0.self_attn.q_proj") and
  // its optional float bias [rows]. `q` must match the writer's bits, sym and groups.
  // InvalidArgument naming the module for a bad name, a duplicate, an ignored module,
  // inconsistent shapes or a value the format cannot store (the message says what to
  // use instead; the dequantized format stores any valid `q`).
  absl::Status AddQuantized(const std::string& module, const kernels::QuantizedWeight& q,
                            const TensorView* bias);
  // Appends a tensor stored as is (embeddings, norms, lm_head, biases).
  absl::Status AddTensor(const std::string& name, const TensorView& t);
  // Writes the shards (+ index), config.json, the format's extra files and the tokenizer
  // files, then renames the staging directory to out_dir (with overwrite, the old
  // directory is renamed aside first and deleted after). config.json is the source's with
  // `quantization_config` set (GPTQ, compressed-tensors; GPTQ also writes
  // quantize_config.json) or, for dequantized, removed and a `dgptq_dequantized` record
  // of opts.quant added. A stale `dgptq_dequantized` record of the source is dropped.
  absl::Status Finish();

  const WriterOptions& options() const { return opts_; }

 private:
  explicit ModelWriter(WriterOptions opts) : opts_(std::move(opts)) {}
  absl::Status AddGptq(const std::string& module, const kernels::QuantizedWeight& q);
  absl::Status AddCompressed(const std::string& module, const kernels::QuantizedWeight& q);
  absl::Status AddDequantized(const std::string& module, const kernels::QuantizedWeight& q);
  absl::Status CheckModule(const std::string& module, const kernels::QuantizedWeight& q,
                           const TensorView* bias) const;
  absl::Status WriteConfigs() const;
  absl::Status CopyTokenizerFiles() const;
  absl::Status Commit();

  WriterOptions opts_;
  std::string staging_;
  std::string src_config_;  // the source config.json text
  std::unique_ptr<ShardedWriter> shards_;
  std::set<std::string> quantized_;  // modules
  std::set<std::string> plain_;      // passthrough tensor names
  bool finished_ = false;
};

}  // namespace dgptq::worker
