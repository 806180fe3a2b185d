// A model's architecture hyper-parameters, read from a Hugging Face config.json.
//
// Supported model_type values: llama, mistral, qwen2 (the Llama family: RMSNorm,
// RoPE, SwiGLU MLP, grouped-query attention) and opt (LayerNorm, learned positions,
// ReLU MLP). Both the transformers 5 layout (`rope_parameters`, `dtype`) and the
// older one (`rope_theta`, `rope_scaling`, `torch_dtype`) are read. Keys that are
// absent or null take the transformers default of that model type.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"

namespace dgptq {

// RoPE frequency scaling. type "default" means plain RoPE (factor 1).
struct RopeScaling {
  std::string type = "default";  // "default", "linear", "dynamic", "llama3", "yarn", ...
  double factor = 1.0;
  double low_freq_factor = 1.0;                  // llama3
  double high_freq_factor = 4.0;                 // llama3
  int64_t original_max_position_embeddings = 0;  // 0 when the config gives none
};

struct ModelConfig {
  std::string model_type;    // "llama", "mistral", "qwen2" or "opt"
  std::string architecture;  // architectures[0], e.g. "LlamaForCausalLM"; "" if absent
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;  // MLP width (OPT: ffn_dim)
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;    // Llama family
  double layer_norm_eps = 1e-5;  // OPT (nn.LayerNorm default; not in its config)
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t sliding_window = 0;  // attention window in tokens; 0 = full attention
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v projections have a bias (qwen2: true)
  bool o_proj_bias = false;     // the attention output projection has a bias
  bool mlp_bias = false;
  std::string hidden_act;           // "silu" (Llama family) or OPT's activation_function ("relu")
  DType torch_dtype = DType::kF32;  // `dtype`, or the older `torch_dtype`
  // OPT only.
  int64_t word_embed_proj_dim = 0;  // defaults to hidden_size
  bool do_layer_norm_before = true;
  bool enable_bias = true;
};

// The model_type values ParseModelConfig accepts, sorted.
std::vector<std::string> SupportedModelTypes();

// Parses and validates config.json text. `source` names the file in errors.
// InvalidArgument (naming `source` and the field) for malformed JSON, a missing or
// mistyped field, an unsupported model_type (the message lists the supported ones),
// non-positive or absurd sizes (e.g. hidden_size > 2^20, > 10000 layers), hidden_size
// not divisible by the heads (when head_dim is not given), or heads not divisible by
// the KV heads. Never throws.
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json, std::string_view source);

// Reads and parses `dir`/config.json; NotFound naming that path if it is missing.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir);

}  // namespace dgptq
