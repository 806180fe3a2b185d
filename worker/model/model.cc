#include "worker/model/model.h"

#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace dgptq::worker {

absl::Status DecoderModel::LoadLinears(ModelReader& r, const std::string& prefix,
                                       const std::function<bool(const std::string&)>& has_bias,
                                       LayerWeights* w) {
  for (const LinearGroup& g : Groups()) {
    for (const std::string& m : g.modules) {
      const Shape shape = LinearShape(m);
      DGPTQ_ASSIGN_OR_RETURN(w->t[m + ".weight"], LoadTensor(b_, r, prefix + m + ".weight", shape));
      if (has_bias(m)) {
        DGPTQ_ASSIGN_OR_RETURN(w->t[m + ".bias"], LoadTensor(b_, r, prefix + m + ".bias", {shape[0]}));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status DecoderModel::Linear(const kernels::Mat& x, const kernels::Mat& w,
                                  const float* bias, const kernels::Mat& out) const {
  return worker::Linear(b_, x, w, bias, out, bf16_gemms_);
}

absl::StatusOr<std::unique_ptr<DecoderModel>> DecoderModel::Create(const ModelConfig& c,
                                                                  kernels::Backend& b) {
  if (c.model_type == "opt") return MakeOptModel(c, b);
  if (c.model_type == "llama" || c.model_type == "mistral" || c.model_type == "qwen2") {
    return MakeLlamaModel(c, b);
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "model_type '%s' is not supported (supported: llama, mistral, qwen2, opt)", c.model_type));
}

}  // namespace dgptq::worker
