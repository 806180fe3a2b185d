// Tensor names per quantized module: see model_writer.cc; layouts: kernels/packing.cc.
#include "worker/output/model_reader.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/json_util.h"
#include "common/status_macros.h"

namespace dgptq::worker {
namespace {

using kernels::QuantizedWeight;

// The first suffix marks a quantized module; all belong to its packed weight.
constexpr const char* kGptqSuffixes[] = {".qweight", ".qzeros", ".scales", ".g_idx"};
constexpr const char* kCtSuffixes[] = {".weight_packed", ".weight_scale", ".weight_shape",
                                       ".weight_zero_point", ".weight_g_idx"};

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() > suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Reads `path`, or "" when it does not exist.
absl::StatusOr<std::string> ReadOptional(const std::string& path) {
  absl::StatusOr<std::string> s = ReadFile(path);
  if (absl::IsNotFound(s.status())) return std::string();
  return s;
}

// int32 [cols] with c / group_size: the mapping of checkpoints that store no g_idx.
Tensor ImplicitGIdx(int64_t cols, int group_size) {
  Tensor t(DType::kI32, {cols});
  for (int64_t c = 0; c < cols; ++c) {
    t.as<int32_t>()[c] = group_size > 0 ? static_cast<int32_t>(c / group_size) : 0;
  }
  return t;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelReader>> ModelReader::Open(const std::string& dir) {
  std::unique_ptr<ModelReader> r(new ModelReader());
  r->dir_ = dir;
  DGPTQ_ASSIGN_OR_RETURN(r->config_, LoadModelConfig(dir));
  const std::string config_path = dir + "/config.json";
  DGPTQ_ASSIGN_OR_RETURN(const std::string config_text, ReadFile(config_path));
  DGPTQ_ASSIGN_OR_RETURN(const std::string quantize_text,
                         ReadOptional(dir + "/quantize_config.json"));
  DGPTQ_ASSIGN_OR_RETURN(r->info_,
                         ParseQuantizationConfig(config_text, quantize_text, config_path));
  DGPTQ_ASSIGN_OR_RETURN(r->dequantized_, ParseDequantizedRecord(config_text, config_path));
  DGPTQ_ASSIGN_OR_RETURN(r->checkpoint_, Checkpoint::Open(dir));
  return r;
}

std::optional<OutputFormat> ModelReader::format() const {
  if (!info_) return std::nullopt;
  return info_->format;
}

const QuantConfig& ModelReader::quant() const { return info_ ? info_->quant : default_quant_; }

std::vector<std::string> ModelReader::ignore() const {
  if (!info_) return {};
  std::vector<std::string> out = info_->ignore;
  if (info_->format == OutputFormat::kGptq && !info_->lm_head_quantized &&
      HasTensor("lm_head.weight") && std::find(out.begin(), out.end(), "lm_head") == out.end()) {
    out.push_back("lm_head");
  }
  return out;
}

std::vector<std::string> ModelReader::TensorNames() const { return checkpoint_->TensorNames(); }

bool ModelReader::HasTensor(const std::string& name) const { return checkpoint_->Has(name); }

bool ModelReader::IsQuantizedModule(const std::string& module) const {
  if (!info_) return false;
  const char* marker = info_->format == OutputFormat::kGptq ? kGptqSuffixes[0] : kCtSuffixes[0];
  return HasTensor(module + marker);
}

std::vector<std::string> ModelReader::QuantizedModules() const {
  std::vector<std::string> out;
  if (!info_) return out;
  const std::string marker =
      info_->format == OutputFormat::kGptq ? kGptqSuffixes[0] : kCtSuffixes[0];
  for (const std::string& name : TensorNames()) {
    if (EndsWith(name, marker)) out.push_back(name.substr(0, name.size() - marker.size()));
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> ModelReader::PlainTensors() const {
  std::vector<std::string> out;
  for (const std::string& name : TensorNames()) {
    bool packed = false;
    const auto check = [&](const auto& suffixes) {
      for (const char* s : suffixes) {
        const std::string suffix = s;
        packed = packed || (EndsWith(name, suffix) &&
                            IsQuantizedModule(name.substr(0, name.size() - suffix.size())));
      }
    };
    if (info_ && info_->format == OutputFormat::kGptq) check(kGptqSuffixes);
    if (info_ && info_->format == OutputFormat::kCompressedTensors) check(kCtSuffixes);
    if (!packed) out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

absl::StatusOr<TensorView> ModelReader::Raw(const std::string& name) {
  return checkpoint_->Get(name);
}

absl::StatusOr<QuantizedWeight> ModelReader::LoadGptq(const std::string& module) {
  const QuantConfig& c = info_->quant;
  DGPTQ_ASSIGN_OR_RETURN(const TensorView qweight, Raw(module + ".qweight"));
  DGPTQ_ASSIGN_OR_RETURN(const TensorView qzeros, Raw(module + ".qzeros"));
  DGPTQ_ASSIGN_OR_RETURN(const TensorView scales, Raw(module + ".scales"));
  Tensor implicit;
  TensorView g_idx;
  if (HasTensor(module + ".g_idx")) {
    DGPTQ_ASSIGN_OR_RETURN(g_idx, Raw(module + ".g_idx"));
  } else if (qweight.shape.size() == 2) {
    implicit = ImplicitGIdx(qweight.shape[0] * 32 / c.bits, c.group_size);
    g_idx = implicit.view();
  }
  return kernels::UnpackGptq(qweight, qzeros, scales, g_idx, c.bits, c.sym);
}

absl::StatusOr<QuantizedWeight> ModelReader::LoadCompressed(const std::string& module) {
  const QuantConfig& c = info_->quant;
  DGPTQ_ASSIGN_OR_RETURN(const TensorView packed, Raw(module + ".weight_packed"));
  DGPTQ_ASSIGN_OR_RETURN(const TensorView scale, Raw(module + ".weight_scale"));
  DGPTQ_ASSIGN_OR_RETURN(const TensorView shape, Raw(module + ".weight_shape"));
  TensorView zero_point, g_idx;  // null views when absent
  if (!c.sym) {
    DGPTQ_ASSIGN_OR_RETURN(zero_point, Raw(module + ".weight_zero_point"));
  }
  if (HasTensor(module + ".weight_g_idx")) {
    DGPTQ_ASSIGN_OR_RETURN(g_idx, Raw(module + ".weight_g_idx"));
  }
  return kernels::UnpackCompressed(packed, scale, zero_point, shape, g_idx, c.bits, c.group_size,
                                   c.sym);
}

absl::StatusOr<QuantizedWeight> ModelReader::LoadQuantized(const std::string& module) {
  if (!IsQuantizedModule(module)) {
    return absl::NotFoundError(
        absl::StrCat(dir_, ": module '", module, "' is not quantized in this checkpoint"));
  }
  const bool gptq = info_->format == OutputFormat::kGptq;
  absl::StatusOr<QuantizedWeight> q = gptq ? LoadGptq(module) : LoadCompressed(module);
  if (!q.ok()) return Annotate(q.status(), absl::StrCat(dir_, ": module ", module));
  // A single group reads back as group_size -1 from GPTQ; the config knows the size.
  const QuantConfig& c = info_->quant;
  if (q->groups() != c.NumGroups(q->cols) || (q->groups() > 1 && q->group_size != c.group_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir_, ": module ", module, " has ", q->groups(), " groups over ", q->cols,
                     " columns, inconsistent with group_size ", c.group_size));
  }
  q->group_size = c.group_size;
  return q;
}

absl::StatusOr<Tensor> ModelReader::LoadWeightF32(const std::string& weight_name) {
  const std::string suffix = ".weight";
  if (EndsWith(weight_name, suffix)) {
    const std::string module = weight_name.substr(0, weight_name.size() - suffix.size());
    if (IsQuantizedModule(module)) {
      DGPTQ_ASSIGN_OR_RETURN(const QuantizedWeight q, LoadQuantized(module));
      return q.Dequantize();
    }
  }
  DGPTQ_ASSIGN_OR_RETURN(const TensorView v, Raw(weight_name));
  if (!IsFloat(v.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(dir_, ": tensor ", weight_name, " has dtype ",
                                                   std::string(DTypeName(v.dtype)),
                                                   ", not a float weight"));
  }
  return Tensor::ToF32(v);
}

}  // namespace dgptq::worker
