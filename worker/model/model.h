// Decoder-only language models, one layer at a time, on a Backend.
//
// Activations are fp32 [tokens, hidden] on the backend's device; the tokens are
// windows of `seq_len` consecutive rows. A model knows its tensor names, its linear
// modules grouped by shared input (one Hessian per group) and how to run a layer.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "kernels/backend.h"
#include "worker/model/layers.h"
#include "worker/output/model_reader.h"

namespace dgptq::worker {

// Linear modules sharing one input, e.g. {"self_attn.q_proj", "self_attn.k_proj",
// "self_attn.v_proj"}; names are relative to the layer prefix.
struct LinearGroup {
  std::vector<std::string> modules;
};

// Called with the input of each linear group during a layer forward; returning false
// stops the forward there (the layer's output is then undefined).
using CaptureFn = std::function<absl::StatusOr<bool>(int group, const kernels::Mat& input)>;

class DecoderModel {
 public:
  // InvalidArgument for an architecture or feature the engine does not run.
  static absl::StatusOr<std::unique_ptr<DecoderModel>> Create(const ModelConfig& c,
                                                             kernels::Backend& b);
  virtual ~DecoderModel() = default;

  const ModelConfig& config() const { return config_; }
  int num_layers() const { return static_cast<int>(config_.num_hidden_layers); }
  // "model.layers.3." (Llama family) or "model.decoder.layers.3." (OPT).
  virtual std::string LayerPrefix(int layer) const = 0;
  virtual const std::vector<LinearGroup>& Groups() const = 0;
  // [out_features, in_features] of a linear module.
  virtual Shape LinearShape(const std::string& module) const = 0;
  // Names of the tensors outside the decoder layers (embeddings, final norm, head).
  virtual std::vector<std::string> GlobalTensors(const ModelReader& r) const = 0;

  // Loads layer `layer` (fp32 on the device, dequantizing quantized modules).
  virtual absl::StatusOr<LayerWeights> LoadLayer(ModelReader& r, int layer) = 0;
  // x <- layer(x) in place.
  virtual absl::Status ForwardLayer(const LayerWeights& w, const kernels::Mat& x,
                                    int64_t seq_len, const CaptureFn& capture) = 0;
  // What LoadGlobals loads: every global weight (evaluation), or only what Embed needs
  // (quantization never computes logits: no final norm, no head).
  enum class Globals { kAll, kEmbeddings };
  // Embedding (and head) weights; call before Embed / Logits.
  virtual absl::Status LoadGlobals(ModelReader& r, Globals which) = 0;
  // Frees the embedding tables and the head (Embed and Logits then fail with
  // InvalidArgument): the pipeline embeds once and needs neither again.
  virtual void DropGlobals() = 0;
  // out [n, hidden] = embeddings of ids (device int32 [n], already range-checked).
  virtual absl::Status Embed(const int32_t* ids, int64_t seq_len, const kernels::Mat& out) = 0;
  // logits [n, vocab] of final hidden states x [n, hidden] (x is normalised in place).
  virtual absl::Status Logits(const kernels::Mat& x, const kernels::Mat& logits) = 0;
  // Whether the linear layers' GEMMs round their operands to bf16 (Backend::GemmBf16):
  // off by default (fp32).
  void SetBf16Gemms(bool on) { bf16_gemms_ = on; }
  bool bf16_gemms() const { return bf16_gemms_; }

 protected:
  DecoderModel(const ModelConfig& c, kernels::Backend& b) : config_(c), b_(b) {}
  // Loads every linear module of Groups() (weight, and bias where has_bias(module)) of
  // the layer with tensor-name prefix `prefix` into `w`.
  absl::Status LoadLinears(ModelReader& r, const std::string& prefix,
                           const std::function<bool(const std::string&)>& has_bias,
                           LayerWeights* w);
  // out = x W^T (+ bias) in the model's GEMM precision.
  absl::Status Linear(const kernels::Mat& x, const kernels::Mat& w, const float* bias,
                      const kernels::Mat& out) const;
  ModelConfig config_;
  kernels::Backend& b_;
  bool bf16_gemms_ = false;
};

// Per architecture (one small file each).
absl::StatusOr<std::unique_ptr<DecoderModel>> MakeLlamaModel(const ModelConfig& c,
                                                            kernels::Backend& b);
absl::StatusOr<std::unique_ptr<DecoderModel>> MakeOptModel(const ModelConfig& c,
                                                          kernels::Backend& b);

}  // namespace dgptq::worker
