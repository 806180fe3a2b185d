// Format facts, read from the reference sources (no code taken):
//
// GPTQ. GPTQModel (ModelCloud/GPTQModel gptqmodel/quantization/config.py
// QuantizeConfig.to_dict; gptqmodel/models/writer.py save_quantized) writes the same dict to
// config.json's quantization_config and to quantize_config.json: bits, group_size, desc_act,
// sym, lm_head, quant_method "gptq", checkpoint_format ("gptq" = v1 zeros), pack_dtype
// "int32", dynamic (omitted when empty) and meta {quantizer: ["gptqmodel:<ver>"], uri,
// damp_percent, damp_auto_increment, static_groups, true_sequential, mse}. AutoGPTQ kept
// damp_percent / static_groups / true_sequential at the top level; vLLM's and SGLang's
// GPTQConfig.from_config (vllm/model_executor/layers/quantization/gptq.py, gptq_marlin.py)
// require bits, group_size, desc_act (+ sym for gptq_marlin) and read lm_head, dynamic,
// checkpoint_format ("gptq_v2" switches the zero convention), static_groups and
// true_sequential when present. `dynamic` keys "-:<regex>" exclude matching modules
// (gptq_utils.get_dynamic_override); other keys override per-module settings, which dgptq
// neither writes nor reads. With static groups g_idx is c / group_size, so dgptq writes
// desc_act false then (no runtime reordering) and records act_order in meta.
//
// compressed-tensors (vllm-project/compressed-tensors src/compressed_tensors/quantization/
// quant_config.py QuantizationConfig, quant_scheme.py QuantizationScheme, quant_args.py
// QuantizationArgs; llm-compressor's W4A16 output): quantization_config = {quant_method
// "compressed-tensors", format "pack-quantized", quantization_status "compressed",
// config_groups {"group_0": {targets ["Linear"], weights {num_bits, type "int", symmetric,
// group_size (null for channel), strategy "group" | "channel", block_structure null, dynamic
// false, actorder, observer, observer_kwargs}, input_activations null, output_activations
// null, format "pack-quantized"}}, ignore [...], kv_cache_scheme null,
// global_compression_ratio null}. QuantizationScheme and QuantizationArgs forbid extra keys.
// actorder: null, "group" (alias "dynamic", or true) or "weight" (alias "static"). Only
// "group" registers weight_g_idx (quantization/lifecycle/initialize.py: "only grouped
// activation ordering has g_idx"); "weight" fixes the groups before the permutation, so
// its layout is that of no act-order. vLLM (layers/quantization/compressed_tensors/
// compressed_tensors.py _quantization_scheme_map_from_config, schemes/
// compressed_tensors_wNa16.py) takes weight-only int schemes with strategy channel/group,
// dynamic false, 4 or 8 bits, and has_g_idx = actorder == "group".
//
// dequantized (dgptq's own): no quantization_config, so transformers and vLLM load a plain
// model; config.json gains "dgptq_dequantized": {bits, group_size, sym, act_order,
// static_groups}, which neither reads (PretrainedConfig keeps unknown keys as attributes).
#include "worker/output/hf_quant_config.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace dgptq::worker {
namespace {

using Json = nlohmann::ordered_json;

constexpr char kGptq[] = "gptq";
constexpr char kCt[] = "compressed-tensors";
constexpr char kPacked[] = "pack-quantized";
constexpr char kDequantized[] = "dequantized";

// The shortest decimal that reads back as `f` (0.01f -> 0.01, not 0.009999999776).
double Shortest(float f) {
  char buf[32];
  for (int digits = 6; digits < 9; ++digits) {
    std::snprintf(buf, sizeof(buf), "%.*g", digits, static_cast<double>(f));
    if (std::strtof(buf, nullptr) == f) break;
  }
  return std::strtod(buf, nullptr);
}

// Regex matching exactly `name` (GPTQModel and vLLM apply re.match to module names).
std::string ExactRegex(const std::string& name) {
  std::string out = "^";
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') out += '\\';
    out += c;
  }
  return out + "$";
}

// The module name of an ExactRegex() pattern, or "" for any other regex.
std::string FromExactRegex(const std::string& re) {
  if (re.size() < 2 || re.front() != '^' || re.back() != '$') return "";
  std::string out;
  for (size_t i = 1; i + 1 < re.size(); ++i) {
    char c = re[i];
    if (c == '\\' && i + 2 < re.size()) {
      c = re[++i];
    } else if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') {
      return "";  // an unescaped metacharacter: a real pattern
    }
    out += c;
  }
  return out;
}

Json GptqConfig(const HfQuantInfo& info, const std::string& quantizer) {
  const QuantConfig& q = info.quant;
  Json j = {{"bits", q.bits},
            {"group_size", q.group_size},
            {"desc_act", GptqDescAct(q)},
            {"sym", q.sym},
            {"lm_head", info.lm_head_quantized},
            {"quant_method", kGptq},
            {"checkpoint_format", kGptq},
            {"pack_dtype", "int32"},
            {"damp_percent", Shortest(q.damp_percent)},
            {"static_groups", q.static_groups},
            {"true_sequential", false}};
  Json dynamic = Json::object();
  for (const std::string& m : info.ignore) {
    if (m != "lm_head") dynamic["-:" + ExactRegex(m)] = Json::object();
  }
  if (!dynamic.empty()) j["dynamic"] = dynamic;
  j["meta"] = {{"quantizer", Json::array({quantizer})},
               {"damp_percent", Shortest(q.damp_percent)},
               {"static_groups", q.static_groups},
               {"true_sequential", false},
               {"act_order", q.act_order}};
  return j;
}

Json CompressedConfig(const HfQuantInfo& info) {
  const QuantConfig& q = info.quant;
  const CtActOrder order = CtActOrderOf(q);
  const Json actorder = order == CtActOrder::kNone     ? Json(nullptr)
                        : order == CtActOrder::kWeight ? Json("weight")
                                                       : Json("group");
  const Json weights = {{"num_bits", q.bits},
                        {"type", "int"},
                        {"symmetric", q.sym},
                        {"group_size", q.group_size > 0 ? Json(q.group_size) : Json(nullptr)},
                        {"strategy", q.group_size > 0 ? "group" : "channel"},
                        {"block_structure", nullptr},
                        {"dynamic", false},
                        {"actorder", actorder},
                        {"observer", q.mse ? "mse" : "minmax"},
                        {"observer_kwargs", Json::object()}};
  const Json group = {{"targets", {"Linear"}},
                      {"weights", weights},
                      {"input_activations", nullptr},
                      {"output_activations", nullptr},
                      {"format", kPacked}};
  return {{"quant_method", kCt},
          {"format", kPacked},
          {"quantization_status", "compressed"},
          {"config_groups", {{"group_0", group}}},
          {"ignore", info.ignore},
          {"kv_cache_scheme", nullptr},
          {"global_compression_ratio", nullptr}};
}

// Type-checked access to one JSON object; errors name `where` and the key.
class Obj {
 public:
  Obj(const Json& j, std::string where) : j_(j), where_(std::move(where)) {}
  const Json* Find(const char* key) const {
    const auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  absl::Status Error(const char* key, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(where_, ": ", key, " ", what));
  }
  absl::StatusOr<int> Int(const char* key, std::optional<int> def = std::nullopt) const {
    const Json* v = Find(key);
    if (v == nullptr && def) return *def;
    if (v == nullptr) return Error(key, "is missing");
    if (!v->is_number_integer()) return Error(key, "must be an integer");
    const int64_t x = v->get<int64_t>();
    if (x < -1 || x > (1 << 20)) return Error(key, absl::StrCat("= ", x, " is out of range"));
    return static_cast<int>(x);
  }
  absl::StatusOr<bool> Bool(const char* key, bool def) const {
    const Json* v = Find(key);
    if (v == nullptr) return def;
    if (!v->is_boolean()) return Error(key, "must be true or false");
    return v->get<bool>();
  }
  absl::StatusOr<std::string> Str(const char* key, const std::string& def) const {
    const Json* v = Find(key);
    if (v == nullptr) return def;
    if (!v->is_string()) return Error(key, "must be a string");
    return v->get<std::string>();
  }
  const std::string& where() const { return where_; }

 private:
  const Json& j_;
  std::string where_;
};

absl::StatusOr<HfQuantInfo> ParseGptq(const Obj& o) {
  HfQuantInfo info;
  info.format = OutputFormat::kGptq;
  QuantConfig& q = info.quant;
  DGPTQ_ASSIGN_OR_RETURN(q.bits, o.Int("bits"));
  DGPTQ_ASSIGN_OR_RETURN(q.group_size, o.Int("group_size"));
  DGPTQ_ASSIGN_OR_RETURN(const bool desc_act, o.Bool("desc_act", false));
  DGPTQ_ASSIGN_OR_RETURN(q.sym, o.Bool("sym", true));
  DGPTQ_ASSIGN_OR_RETURN(info.lm_head_quantized, o.Bool("lm_head", false));
  DGPTQ_ASSIGN_OR_RETURN(const std::string fmt, o.Str("checkpoint_format", kGptq));
  if (fmt != kGptq) {
    return o.Error("checkpoint_format", absl::StrCat("'", fmt, "' is not supported (dgptq ",
                                                     "reads GPTQ v1 checkpoints, 'gptq')"));
  }
  const Json* meta_j = o.Find("meta");
  const Json empty = Json::object();
  const Obj meta(meta_j != nullptr && meta_j->is_object() ? *meta_j : empty, o.where() + ".meta");
  DGPTQ_ASSIGN_OR_RETURN(const bool meta_static, meta.Bool("static_groups", false));
  DGPTQ_ASSIGN_OR_RETURN(q.static_groups, o.Bool("static_groups", meta_static));
  DGPTQ_ASSIGN_OR_RETURN(const bool meta_act, meta.Bool("act_order", false));
  q.act_order = desc_act || meta_act;
  if (q.group_size <= 0) q.static_groups = false;
  const Json* damp = o.Find("damp_percent");
  if (damp == nullptr) damp = meta.Find("damp_percent");
  // Informational here: a value our QuantConfig would not accept is left at the default.
  if (damp != nullptr && damp->is_number() && damp->get<double>() > 0 &&
      damp->get<double>() <= q.damp_max) {
    q.damp_percent = damp->get<float>();
  }
  if (const Json* dyn = o.Find("dynamic"); dyn != nullptr && dyn->is_object()) {
    for (const auto& [key, value] : dyn->items()) {
      (void)value;
      if (key.rfind("-:", 0) != 0) {
        return o.Error("dynamic", absl::StrCat("override '", key, "' is not supported (dgptq ",
                                               "reads one setting for all modules)"));
      }
      // A real regex names no module list: the modules it excludes are simply absent.
      const std::string module = FromExactRegex(key.substr(2));
      if (!module.empty()) info.ignore.push_back(module);
    }
  }
  return info;
}

absl::StatusOr<CtActOrder> ParseActOrder(const Obj& w) {
  const Json* a = w.Find("actorder");
  if (a == nullptr) return CtActOrder::kNone;
  if (a->is_boolean()) return a->get<bool>() ? CtActOrder::kGroup : CtActOrder::kNone;
  if (a->is_string()) {
    const std::string s = a->get<std::string>();
    if (s == "group" || s == "dynamic") return CtActOrder::kGroup;
    if (s == "weight" || s == "static") return CtActOrder::kWeight;
  }
  return w.Error("actorder", "must be null, \"group\" or \"weight\"");
}

absl::Status ParseCtWeights(const Obj& w, QuantConfig& q) {
  DGPTQ_ASSIGN_OR_RETURN(q.bits, w.Int("num_bits"));
  DGPTQ_ASSIGN_OR_RETURN(const std::string type, w.Str("type", "int"));
  if (type != "int") return w.Error("type", absl::StrCat("'", type, "' is not supported (int)"));
  DGPTQ_ASSIGN_OR_RETURN(q.sym, w.Bool("symmetric", true));
  DGPTQ_ASSIGN_OR_RETURN(const std::string strategy, w.Str("strategy", ""));
  if (strategy == "group") {
    DGPTQ_ASSIGN_OR_RETURN(q.group_size, w.Int("group_size"));
    if (q.group_size <= 0) return w.Error("group_size", "must be positive for strategy group");
  } else if (strategy == "channel") {
    q.group_size = -1;
  } else {
    return w.Error("strategy", absl::StrCat("'", strategy, "' is not supported (group, channel)"));
  }
  DGPTQ_ASSIGN_OR_RETURN(const bool dynamic, w.Bool("dynamic", false));
  if (dynamic) return w.Error("dynamic", "must be false for stored weights");
  DGPTQ_ASSIGN_OR_RETURN(const CtActOrder order, ParseActOrder(w));
  q.act_order = order != CtActOrder::kNone;
  q.static_groups = order == CtActOrder::kWeight && q.group_size > 0;
  return absl::OkStatus();
}

absl::StatusOr<HfQuantInfo> ParseCompressed(const Obj& o) {
  HfQuantInfo info;
  info.format = OutputFormat::kCompressedTensors;
  const Json* groups = o.Find("config_groups");
  if (groups == nullptr || !groups->is_object() || groups->size() != 1) {
    return o.Error("config_groups", "must hold exactly one group (dgptq reads one scheme)");
  }
  const auto& [name, group] = *groups->items().begin();
  if (!group.is_object()) return o.Error("config_groups", "entries must be objects");
  const Obj g(group, absl::StrCat(o.where(), ".config_groups.", name));
  DGPTQ_ASSIGN_OR_RETURN(const std::string top_format, o.Str("format", ""));
  DGPTQ_ASSIGN_OR_RETURN(const std::string format, g.Str("format", top_format));
  if (format != kPacked) {
    return g.Error("format",
                   absl::StrCat("'", format, "' is not supported (dgptq reads ", kPacked, ")"));
  }
  if (g.Find("input_activations") != nullptr || g.Find("output_activations") != nullptr) {
    return g.Error("input_activations", "must be null (dgptq reads weight-only schemes)");
  }
  const Json* w = g.Find("weights");
  if (w == nullptr || !w->is_object()) return g.Error("weights", "must be an object");
  DGPTQ_RETURN_IF_ERROR(ParseCtWeights(Obj(*w, g.where() + ".weights"), info.quant));
  if (const Json* ig = o.Find("ignore"); ig != nullptr) {
    if (!ig->is_array()) return o.Error("ignore", "must be a list of module names");
    for (const Json& m : *ig) {
      if (!m.is_string()) return o.Error("ignore", "must be a list of module names");
      info.ignore.push_back(m.get<std::string>());
    }
  }
  return info;
}

absl::StatusOr<Json> ParseObject(const std::string& text, const std::string& source) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(source + ": not a JSON object");
  }
  return j;
}

}  // namespace

absl::StatusOr<OutputFormat> ParseOutputFormat(absl::string_view name) {
  if (name == kGptq) return OutputFormat::kGptq;
  if (name == kCt) return OutputFormat::kCompressedTensors;
  if (name == kDequantized) return OutputFormat::kDequantized;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown output format '", name, "' (gptq, compressed-tensors or dequantized)"));
}

const char* OutputFormatName(OutputFormat f) {
  switch (f) {
    case OutputFormat::kGptq:
      return kGptq;
    case OutputFormat::kCompressedTensors:
      return kCt;
    case OutputFormat::kDequantized:
      return kDequantized;
  }
  return "unknown";
}

CtActOrder CtActOrderOf(const QuantConfig& q) {
  if (!q.act_order) return CtActOrder::kNone;
  return q.static_groups || q.group_size <= 0 ? CtActOrder::kWeight : CtActOrder::kGroup;
}

bool GptqDescAct(const QuantConfig& q) {
  return q.act_order && !q.static_groups && q.group_size > 0;
}

bool IsImplicitGIdx(const kernels::QuantizedWeight& q) {
  for (int64_t c = 0; c < q.cols && c < static_cast<int64_t>(q.g_idx.size()); ++c) {
    if (q.g_idx[c] != (q.group_size > 0 ? c / q.group_size : 0)) return false;
  }
  return true;
}

std::string BuildQuantizationConfig(const HfQuantInfo& info, const std::string& quantizer) {
  const Json j =
      info.format == OutputFormat::kGptq ? GptqConfig(info, quantizer) : CompressedConfig(info);
  return j.dump(2);
}

absl::StatusOr<std::optional<HfQuantInfo>> ParseQuantizationConfig(
    const std::string& config_json, const std::string& quantize_config_json,
    const std::string& source) {
  DGPTQ_ASSIGN_OR_RETURN(const Json config, ParseObject(config_json, source));
  Json qc;
  std::string where = source + ": quantization_config";
  std::string method_default;
  if (const auto it = config.find("quantization_config"); it != config.end() && !it->is_null()) {
    qc = *it;
  } else if (!quantize_config_json.empty()) {
    where = "quantize_config.json";
    DGPTQ_ASSIGN_OR_RETURN(qc, ParseObject(quantize_config_json, where));
    method_default = kGptq;  // AutoGPTQ wrote no quant_method there
  } else {
    return std::optional<HfQuantInfo>();
  }
  if (!qc.is_object()) return absl::InvalidArgumentError(where + " must be an object");
  const Obj o(qc, where);
  DGPTQ_ASSIGN_OR_RETURN(const std::string method, o.Str("quant_method", method_default));
  absl::StatusOr<HfQuantInfo> info;
  if (method == kGptq) {
    info = ParseGptq(o);
  } else if (method == kCt) {
    info = ParseCompressed(o);
  } else {
    return o.Error("quant_method", absl::StrCat("'", method, "' is not supported (dgptq reads ",
                                                kGptq, " and ", kCt, ")"));
  }
  if (!info.ok()) return info.status();
  DGPTQ_RETURN_IF_ERROR(Annotate(info->quant.Validate(), where));
  return std::optional<HfQuantInfo>(*std::move(info));
}

std::string BuildDequantizedRecord(const QuantConfig& q) {
  const Json j = {{"bits", q.bits},
                  {"group_size", q.group_size},
                  {"sym", q.sym},
                  {"act_order", q.act_order},
                  {"static_groups", q.static_groups}};
  return j.dump(2);
}

absl::StatusOr<std::optional<QuantConfig>> ParseDequantizedRecord(const std::string& config_json,
                                                                  const std::string& source) {
  DGPTQ_ASSIGN_OR_RETURN(const Json config, ParseObject(config_json, source));
  const auto it = config.find(kDequantizedKey);
  if (it == config.end() || it->is_null()) return std::optional<QuantConfig>();
  const std::string where = absl::StrCat(source, ": ", kDequantizedKey);
  if (!it->is_object()) return absl::InvalidArgumentError(where + " must be an object");
  const Obj o(*it, where);
  QuantConfig q;
  DGPTQ_ASSIGN_OR_RETURN(q.bits, o.Int("bits"));
  DGPTQ_ASSIGN_OR_RETURN(q.group_size, o.Int("group_size"));
  DGPTQ_ASSIGN_OR_RETURN(q.sym, o.Bool("sym", q.sym));
  DGPTQ_ASSIGN_OR_RETURN(q.act_order, o.Bool("act_order", q.act_order));
  DGPTQ_ASSIGN_OR_RETURN(q.static_groups, o.Bool("static_groups", q.static_groups));
  DGPTQ_RETURN_IF_ERROR(Annotate(q.Validate(), where));
  return std::optional<QuantConfig>(q);
}

std::optional<DType> StoredScaleDType(OutputFormat f, DType model_dtype) {
  switch (f) {
    case OutputFormat::kGptq:
      return DType::kF16;
    case OutputFormat::kCompressedTensors:
      return model_dtype;
    case OutputFormat::kDequantized:
      break;
  }
  return std::nullopt;
}

void RoundScales(kernels::QuantizedWeight* q, DType dtype) {
  std::vector<uint16_t> narrow(q->scales.size());
  ConvertFromF32(q->scales.data(), dtype, narrow.data(), narrow.size());
  ConvertToF32(dtype, narrow.data(), q->scales.data(), narrow.size());
}

std::string StoredTensorName(OutputFormat f, const std::string& module) {
  switch (f) {
    case OutputFormat::kGptq:
      return module + ".qweight";
    case OutputFormat::kCompressedTensors:
      return module + ".weight_packed";
    case OutputFormat::kDequantized:
      break;
  }
  return module + ".weight";
}

}  // namespace dgptq::worker
