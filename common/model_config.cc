#include "common/model_config.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/json_util.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace dgptq {
namespace {

using json = nlohmann::json;

// transformers defaults that differ between the supported model types.
struct TypeDefaults {
  absl::string_view type;
  int64_t max_position_embeddings;
  bool tie_word_embeddings;
};
constexpr TypeDefaults kTypes[] = {
    {"llama", 2048, false},
    {"mistral", 131072, false},
    {"opt", 2048, true},
    {"qwen2", 32768, false},
};

constexpr absl::string_view kRopeTypes[] = {"default", "linear", "dynamic",
                                            "llama3",  "yarn",   "longrope"};

// Typed, non-throwing access to the keys of one JSON object. Absent and null keys
// leave the output untouched (the caller has set the default); a present key of the
// wrong type is InvalidArgument naming `source` and the key.
class Fields {
 public:
  Fields(const json& obj, absl::string_view source, std::string prefix = {})
      : obj_(obj), source_(source), prefix_(std::move(prefix)) {}

  const json* Get(const char* key) const {
    const auto it = obj_.find(key);
    return it == obj_.end() || it->is_null() ? nullptr : &*it;
  }
  absl::Status Error(absl::string_view key, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", prefix_, key, ": ", what));
  }
  absl::Status Int(const char* key, int64_t* out) const {
    const json* v = Get(key);
    if (v == nullptr) return absl::OkStatus();
    if (v->is_number_unsigned() &&
        v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Error(key, "integer out of range");
    }
    if (!v->is_number_integer()) return Error(key, "expected an integer");
    *out = v->get<int64_t>();
    return absl::OkStatus();
  }
  absl::Status RequiredInt(const char* key, int64_t* out) const {
    if (Get(key) == nullptr) return Error(key, "missing required field");
    return Int(key, out);
  }
  absl::Status OptionalInt(const char* key, std::optional<int64_t>* out) const {
    if (Get(key) == nullptr) return absl::OkStatus();
    int64_t v = 0;
    DGPTQ_RETURN_IF_ERROR(Int(key, &v));
    *out = v;
    return absl::OkStatus();
  }
  absl::Status Double(const char* key, double* out) const {
    const json* v = Get(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_number()) return Error(key, "expected a number");
    *out = v->get<double>();
    return absl::OkStatus();
  }
  absl::Status Bool(const char* key, bool* out) const {
    const json* v = Get(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_boolean()) return Error(key, "expected true or false");
    *out = v->get<bool>();
    return absl::OkStatus();
  }
  absl::Status String(const char* key, std::string* out) const {
    const json* v = Get(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_string()) return Error(key, "expected a string");
    *out = v->get<std::string>();
    return absl::OkStatus();
  }

 private:
  const json& obj_;
  absl::string_view source_;
  std::string prefix_;
};

absl::Status CheckRange(const Fields& f, const char* key, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    return f.Error(key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", v));
  }
  return absl::OkStatus();
}

absl::Status CheckPositive(const Fields& f, const char* key, double v, double hi) {
  if (!std::isfinite(v) || v <= 0 || v > hi) {
    return f.Error(key, absl::StrCat("must be positive, finite and at most ", hi, ", got ", v));
  }
  return absl::OkStatus();
}

// Reads the layer sizes and attention geometry, filling the derived defaults.
absl::Status ParseSizes(const Fields& f, bool opt, ModelConfig* c) {
  const char* mlp_key = opt ? "ffn_dim" : "intermediate_size";
  DGPTQ_RETURN_IF_ERROR(f.RequiredInt("hidden_size", &c->hidden_size));
  DGPTQ_RETURN_IF_ERROR(f.RequiredInt(mlp_key, &c->intermediate_size));
  DGPTQ_RETURN_IF_ERROR(f.RequiredInt("num_hidden_layers", &c->num_hidden_layers));
  DGPTQ_RETURN_IF_ERROR(f.RequiredInt("num_attention_heads", &c->num_attention_heads));
  DGPTQ_RETURN_IF_ERROR(f.RequiredInt("vocab_size", &c->vocab_size));
  DGPTQ_RETURN_IF_ERROR(f.Int("max_position_embeddings", &c->max_position_embeddings));
  DGPTQ_RETURN_IF_ERROR(CheckRange(f, "hidden_size", c->hidden_size, 1, 1 << 20));
  DGPTQ_RETURN_IF_ERROR(CheckRange(f, mlp_key, c->intermediate_size, 1, 1 << 22));
  DGPTQ_RETURN_IF_ERROR(CheckRange(f, "num_hidden_layers", c->num_hidden_layers, 1, 10000));
  DGPTQ_RETURN_IF_ERROR(CheckRange(f, "num_attention_heads", c->num_attention_heads, 1, 1 << 14));
  DGPTQ_RETURN_IF_ERROR(CheckRange(f, "vocab_size", c->vocab_size, 1, 1 << 24));
  DGPTQ_RETURN_IF_ERROR(
      CheckRange(f, "max_position_embeddings", c->max_position_embeddings, 1, 1 << 30));
  const int64_t heads = c->num_attention_heads;
  std::optional<int64_t> kv;
  std::optional<int64_t> head_dim;
  DGPTQ_RETURN_IF_ERROR(f.OptionalInt("num_key_value_heads", &kv));
  DGPTQ_RETURN_IF_ERROR(f.OptionalInt("head_dim", &head_dim));
  c->num_key_value_heads = kv.value_or(heads);
  DGPTQ_RETURN_IF_ERROR(CheckRange(f, "num_key_value_heads", c->num_key_value_heads, 1, heads));
  if (heads % c->num_key_value_heads != 0) {
    return f.Error(
        "num_key_value_heads",
        absl::StrCat(c->num_key_value_heads, " does not divide num_attention_heads ", heads));
  }
  if (head_dim.has_value()) {
    c->head_dim = *head_dim;
    DGPTQ_RETURN_IF_ERROR(CheckRange(f, "head_dim", c->head_dim, 1, 1 << 14));
    if (heads * c->head_dim > (1 << 22)) {
      return f.Error("head_dim", "num_attention_heads * head_dim exceeds 2^22");
    }
  } else if (c->hidden_size % heads != 0) {
    return f.Error("hidden_size", absl::StrCat(c->hidden_size, " is not divisible by ",
                                               "num_attention_heads ", heads));
  } else {
    c->head_dim = c->hidden_size / heads;
  }
  return absl::OkStatus();
}

absl::Status ParseDType(const Fields& f, ModelConfig* c) {
  // transformers 5 writes `dtype`; older versions `torch_dtype`.
  const char* key = f.Get("dtype") != nullptr ? "dtype" : "torch_dtype";
  std::string name = "float32";
  DGPTQ_RETURN_IF_ERROR(f.String(key, &name));
  if (name.starts_with("torch.")) name = name.substr(6);
  if (name == "float32" || name == "float") {
    c->torch_dtype = DType::kF32;
  } else if (name == "float16" || name == "half") {
    c->torch_dtype = DType::kF16;
  } else if (name == "bfloat16") {
    c->torch_dtype = DType::kBF16;
  } else {
    return f.Error(key, absl::StrCat("unsupported dtype '", name.substr(0, 64),
                                     "' (supported: float32, float16, bfloat16)"));
  }
  return absl::OkStatus();
}

// Reads one rope_parameters / rope_scaling object (keys shared by both layouts).
absl::Status ParseRopeObject(const Fields& r, ModelConfig* c) {
  DGPTQ_RETURN_IF_ERROR(r.Double("rope_theta", &c->rope_theta));
  RopeScaling& s = c->rope_scaling;
  const char* type_key = r.Get("rope_type") != nullptr ? "rope_type" : "type";
  DGPTQ_RETURN_IF_ERROR(r.String(type_key, &s.type));
  if (std::find(std::begin(kRopeTypes), std::end(kRopeTypes), s.type) == std::end(kRopeTypes)) {
    return r.Error(type_key, absl::StrCat("unsupported RoPE type '", s.type.substr(0, 64),
                                          "' (supported: ", absl::StrJoin(kRopeTypes, ", "), ")"));
  }
  DGPTQ_RETURN_IF_ERROR(r.Double("factor", &s.factor));
  DGPTQ_RETURN_IF_ERROR(r.Double("low_freq_factor", &s.low_freq_factor));
  DGPTQ_RETURN_IF_ERROR(r.Double("high_freq_factor", &s.high_freq_factor));
  DGPTQ_RETURN_IF_ERROR(
      r.Int("original_max_position_embeddings", &s.original_max_position_embeddings));
  DGPTQ_RETURN_IF_ERROR(CheckPositive(r, "factor", s.factor, 1e6));
  if (s.type == "llama3") {
    DGPTQ_RETURN_IF_ERROR(CheckPositive(r, "low_freq_factor", s.low_freq_factor, 1e6));
    DGPTQ_RETURN_IF_ERROR(CheckPositive(r, "high_freq_factor", s.high_freq_factor, 1e6));
    if (s.high_freq_factor <= s.low_freq_factor) {
      return r.Error("high_freq_factor", "must exceed low_freq_factor for llama3 RoPE");
    }
    DGPTQ_RETURN_IF_ERROR(CheckRange(r, "original_max_position_embeddings",
                                     s.original_max_position_embeddings, 1, 1 << 30));
  }
  return absl::OkStatus();
}

absl::Status ParseRope(const Fields& f, absl::string_view source, ModelConfig* c) {
  DGPTQ_RETURN_IF_ERROR(f.Double("rope_theta", &c->rope_theta));
  const char* key = f.Get("rope_parameters") != nullptr ? "rope_parameters" : "rope_scaling";
  if (const json* r = f.Get(key); r != nullptr) {
    if (!r->is_object()) return f.Error(key, "expected an object");
    DGPTQ_RETURN_IF_ERROR(ParseRopeObject(Fields(*r, source, absl::StrCat(key, ".")), c));
  }
  return CheckPositive(f, "rope_theta", c->rope_theta, 1e12);
}

absl::Status ParseLlamaFamily(const Fields& f, absl::string_view source, ModelConfig* c) {
  c->hidden_act = "silu";
  DGPTQ_RETURN_IF_ERROR(f.String("hidden_act", &c->hidden_act));
  DGPTQ_RETURN_IF_ERROR(f.Double("rms_norm_eps", &c->rms_norm_eps));
  DGPTQ_RETURN_IF_ERROR(CheckPositive(f, "rms_norm_eps", c->rms_norm_eps, 1.0));
  if (c->model_type == "qwen2") {
    // Qwen2 always has q/k/v biases and no o_proj bias; its config has no key for it.
    c->attention_bias = true;
    bool sliding = false;
    DGPTQ_RETURN_IF_ERROR(f.Bool("use_sliding_window", &sliding));
    if (sliding) return f.Error("use_sliding_window", "true is not supported");
  } else {
    DGPTQ_RETURN_IF_ERROR(f.Bool("attention_bias", &c->attention_bias));
    c->o_proj_bias = c->attention_bias;
  }
  DGPTQ_RETURN_IF_ERROR(f.Bool("mlp_bias", &c->mlp_bias));
  if (c->model_type == "mistral") {
    DGPTQ_RETURN_IF_ERROR(f.Int("sliding_window", &c->sliding_window));
    DGPTQ_RETURN_IF_ERROR(CheckRange(f, "sliding_window", c->sliding_window, 0, 1 << 30));
  }
  return ParseRope(f, source, c);
}

absl::Status ParseOpt(const Fields& f, ModelConfig* c) {
  c->hidden_act = "relu";
  DGPTQ_RETURN_IF_ERROR(f.String("activation_function", &c->hidden_act));
  DGPTQ_RETURN_IF_ERROR(f.Bool("do_layer_norm_before", &c->do_layer_norm_before));
  DGPTQ_RETURN_IF_ERROR(f.Bool("enable_bias", &c->enable_bias));
  c->attention_bias = c->o_proj_bias = c->mlp_bias = c->enable_bias;
  c->word_embed_proj_dim = c->hidden_size;
  DGPTQ_RETURN_IF_ERROR(f.Int("word_embed_proj_dim", &c->word_embed_proj_dim));
  return CheckRange(f, "word_embed_proj_dim", c->word_embed_proj_dim, 1, 1 << 20);
}

absl::Status ParseArchitecture(const Fields& f, ModelConfig* c) {
  const json* a = f.Get("architectures");
  if (a == nullptr) return absl::OkStatus();
  if (!a->is_array() || (!a->empty() && !(*a)[0].is_string())) {
    return f.Error("architectures", "expected an array of strings");
  }
  if (!a->empty()) c->architecture = (*a)[0].get<std::string>();
  return absl::OkStatus();
}

}  // namespace

std::vector<std::string> SupportedModelTypes() {
  std::vector<std::string> out;
  for (const TypeDefaults& t : kTypes) out.emplace_back(t.type);
  return out;
}

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view text, std::string_view source_name) {
  // This abseil's string_view is its own type, distinct from std::string_view.
  const absl::string_view source(source_name.data(), source_name.size());
  json root;
  try {
    root = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON: ", e.what()));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  }
  const Fields f(root, source);
  ModelConfig c;
  DGPTQ_RETURN_IF_ERROR(f.String("model_type", &c.model_type));
  const TypeDefaults* type = nullptr;
  for (const TypeDefaults& t : kTypes) {
    if (t.type == c.model_type) type = &t;
  }
  if (c.model_type.empty()) {
    return f.Error("model_type", absl::StrCat("missing required field (supported: ",
                                              absl::StrJoin(SupportedModelTypes(), ", "), ")"));
  }
  if (type == nullptr) {
    return f.Error("model_type",
                   absl::StrCat("unsupported model_type '", c.model_type.substr(0, 64),
                                "' (supported: ", absl::StrJoin(SupportedModelTypes(), ", "), ")"));
  }
  c.max_position_embeddings = type->max_position_embeddings;
  c.tie_word_embeddings = type->tie_word_embeddings;
  const bool opt = c.model_type == "opt";
  DGPTQ_RETURN_IF_ERROR(ParseArchitecture(f, &c));
  DGPTQ_RETURN_IF_ERROR(ParseSizes(f, opt, &c));
  DGPTQ_RETURN_IF_ERROR(ParseDType(f, &c));
  DGPTQ_RETURN_IF_ERROR(f.Bool("tie_word_embeddings", &c.tie_word_embeddings));
  DGPTQ_RETURN_IF_ERROR(opt ? ParseOpt(f, &c) : ParseLlamaFamily(f, source, &c));
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir) {
  const std::string path = dir + "/config.json";
  DGPTQ_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  return ParseModelConfig(text, path);
}

}  // namespace dgptq
