// Writes a quantized Hugging Face checkpoint that vLLM and transformers load as is, in
// GPTQ (v1) or compressed-tensors pack-quantized format (DESIGN.md "Formats"), or a
// dequantized (fake-quant) one: each quantized linear's `<module>.weight` stored as the
// fp32 values scale * (code - zero), exactly QuantizedWeight::Dequantize(), in a plain
// checkpoint with no quantization_config. It evaluates what GPTQ produced for any bits,
// groups and shapes (3 bits, rows or cols that no int32 packing divides), at fp32 size.
//
// Everything is staged in the sibling directory `<out_dir>.partial` (PartialDir());
// Finish() moves it under `out_dir` with one rename, so a crash or an error never leaves a
// half-written checkpoint under the final name. Tensors are written in parts
// (common/safetensors_writer.h): the pipeline writes one part per layer and rank, so the
// partial directory records which layers are done, and a run that stopped can be resumed
// (ResumeMode). The partial directory also holds `dgptq-partial.json`, the settings it was
// made with, and config.json. Several writers may fill one partial directory: the one
// made by Create() owns it (locks it, publishes it); writers made by Attach() (the other
// ranks of a job) only add parts. Weights follow the project convention
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

// What Create() does with a partial directory left by an earlier run.
enum class ResumeMode {
  kOff,         // remove it and start over
  kIfMatching,  // keep it when made with the same settings, else start over
  kRequired,    // keep it when made with the same settings, else FailedPrecondition
};

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
  // What else decides the tensors (calibration, seed, ...), as text: recorded with the
  // options above in the partial directory; a partial directory is resumed only under the
  // same settings and fingerprint.
  std::string fingerprint;
  ResumeMode resume = ResumeMode::kOff;
  // Keep the partial directory when the writer is destroyed unfinished and it holds a part,
  // for a later run to resume. Otherwise (or when it holds no part) it is removed.
  bool keep_partial = false;
};

// `<out_dir>.partial`, where the output of out_dir is staged.
std::string PartialDir(const std::string& out_dir);
// Removes out_dir's partial directory (a cancelled job's); fine when there is none.
absl::Status RemovePartialOutput(const std::string& out_dir);

// Not thread-safe: one writer is driven by one thread.
class ModelWriter {
 public:
  // InvalidArgument for bad options (empty or equal directories, a bad QuantConfig,
  // 3-bit compressed-tensors, a compressed-tensors scale dtype other than F16/BF16);
  // NotFound when
  // src_model_dir has no config.json; FailedPrecondition when out_dir exists and is
  // not empty (holds a model) and overwrite is false.
  // The partial directory is created, or kept per opts.resume, locked (FailedPrecondition
  // while another process holds it), and given dgptq-partial.json and config.json.
  // kRequired with a partial directory of other settings: FailedPrecondition naming the
  // first setting that differs.
  static absl::StatusOr<std::unique_ptr<ModelWriter>> Create(const WriterOptions& opts);
  // A writer of parts into the partial directory that another process's Create() makes
  // (the other ranks of a job); it cannot Finish() and never removes the directory, which
  // must exist by the first EndPart(). The same InvalidArgument checks as Create().
  static absl::StatusOr<std::unique_ptr<ModelWriter>> Attach(const WriterOptions& opts);
  // Removes the partial directory unless Finish() succeeded or it is kept (keep_partial).
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
  // Starts part `part` (letters, digits, '.', '-', '_'): what is added until EndPart() is
  // written to it at once; see ShardedWriter.
  absl::Status BeginPart(const std::string& part);
  absl::Status EndPart();
  // Whether Create() kept an earlier run's partial directory.
  bool resumed() const { return resumed_; }
  const std::string& partial_dir() const { return staging_; }

  // Publishes every part of the partial directory as the shards (+ index), config.json, the format's extra files and the tokenizer
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
  absl::Status PrepareStaging();
  absl::Status EnsureShards();

  WriterOptions opts_;
  bool owner_ = false;    // made by Create() and holding the lock
  bool resumed_ = false;
  int lock_fd_ = -1;      // flock on the partial directory (owner)
  std::string staging_;
  std::string src_config_;  // the source config.json text
  std::unique_ptr<ShardedWriter> shards_;
  std::set<std::string> quantized_;  // modules
  std::set<std::string> plain_;      // passthrough tensor names
  bool lm_head_quantized_ = false;   // over every part, found by Finish()
  bool finished_ = false;
};

}  // namespace dgptq::worker
