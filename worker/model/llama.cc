// The Llama family (llama, mistral, qwen2): RMSNorm, rotary embeddings, grouped-query
// causal attention (q/k/v bias for qwen2), SwiGLU MLP, residuals.
#include <cmath>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "worker/model/model.h"

namespace dgptq::worker {
namespace {

using kernels::Mat;

class LlamaModel final : public DecoderModel {
 public:
  LlamaModel(const ModelConfig& c, kernels::Backend& b, std::vector<float> inv_freq)
      : DecoderModel(c, b), inv_freq_host_(std::move(inv_freq)) {
    groups_ = {{{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}},
               {{"self_attn.o_proj"}},
               {{"mlp.gate_proj", "mlp.up_proj"}},
               {{"mlp.down_proj"}}};
  }

  std::string LayerPrefix(int layer) const override {
    return absl::StrFormat("model.layers.%d.", layer);
  }
  const std::vector<LinearGroup>& Groups() const override { return groups_; }

  Shape LinearShape(const std::string& m) const override {
    const ModelConfig& c = config_;
    const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
    if (m == "self_attn.q_proj") return {q, c.hidden_size};
    if (m == "self_attn.k_proj" || m == "self_attn.v_proj") return {kv, c.hidden_size};
    if (m == "self_attn.o_proj") return {c.hidden_size, q};
    if (m == "mlp.down_proj") return {c.hidden_size, c.intermediate_size};
    return {c.intermediate_size, c.hidden_size};  // gate_proj, up_proj
  }

  std::vector<std::string> GlobalTensors(const ModelReader& r) const override {
    std::vector<std::string> names = {"model.embed_tokens.weight", "model.norm.weight"};
    if (r.HasTensor("lm_head.weight") || !config_.tie_word_embeddings) {
      names.push_back("lm_head.weight");
    }
    return names;
  }

  absl::StatusOr<LayerWeights> LoadLayer(ModelReader& r, int layer) override {
    LayerWeights w;
    w.layer = layer;
    const std::string p = LayerPrefix(layer);
    const int64_t h = config_.hidden_size;
    for (const char* norm : {"input_layernorm.weight", "post_attention_layernorm.weight"}) {
      DGPTQ_ASSIGN_OR_RETURN(w.t[norm], LoadTensor(b_, r, p + norm, {h}));
    }
    DGPTQ_RETURN_IF_ERROR(LoadLinears(r, p, [this](const std::string& m) {
      return m == "self_attn.o_proj" ? config_.o_proj_bias
             : m.rfind("mlp.", 0) == 0 ? config_.mlp_bias
                                        : config_.attention_bias;
    }, &w));
    return w;
  }

  absl::Status ForwardLayer(const LayerWeights& w, const Mat& x, int64_t seq_len,
                            const CaptureFn& capture) override;

  absl::Status LoadGlobals(ModelReader& r, Globals which) override {
    const ModelConfig& c = config_;
    DGPTQ_ASSIGN_OR_RETURN(embed_, LoadTensor(b_, r, "model.embed_tokens.weight",
                                               {c.vocab_size, c.hidden_size}));
    DGPTQ_ASSIGN_OR_RETURN(inv_freq_, NewDeviceTensor(b_, 1, inv_freq_host_.size()));
    DGPTQ_RETURN_IF_ERROR(
        b_.Upload(inv_freq_host_.data(), inv_freq_.buf.data(), inv_freq_host_.size() * 4));
    if (which == Globals::kEmbeddings) return absl::OkStatus();
    DGPTQ_ASSIGN_OR_RETURN(norm_, LoadTensor(b_, r, "model.norm.weight", {c.hidden_size}));
    const bool tied = c.tie_word_embeddings && !r.HasTensor("lm_head.weight");
    if (!tied) {
      DGPTQ_ASSIGN_OR_RETURN(head_, LoadTensor(b_, r, "lm_head.weight", {c.vocab_size, c.hidden_size}));
    }
    head_mat_ = tied ? embed_.mat : head_.mat;
    return absl::OkStatus();
  }
  void DropGlobals() override { embed_ = {}, norm_ = {}, head_ = {}, head_mat_ = {}; }

  absl::Status Embed(const int32_t* ids, int64_t, const Mat& out) override {
    return b_.Embedding(ids, embed_.mat, out);
  }

  absl::Status Logits(const Mat& x, const Mat& logits) override {
    DGPTQ_RETURN_IF_ERROR(b_.RmsNorm(x, norm_.mat.data, config_.rms_norm_eps, x));
    return Linear(x, head_mat_, nullptr, logits);
  }

 private:
  const float* Bias(const LayerWeights& w, const std::string& m) const {
    return w.has(m + ".bias") ? w.ptr(m + ".bias") : nullptr;
  }

  std::vector<LinearGroup> groups_;
  std::vector<float> inv_freq_host_;
  DeviceTensor inv_freq_, embed_, norm_, head_;
  Mat head_mat_;
};

absl::Status LlamaModel::ForwardLayer(const LayerWeights& w, const Mat& x, int64_t seq_len,
                                      const CaptureFn& capture) {
  const ModelConfig& c = config_;
  const int64_t n = x.rows, hd = c.head_dim, nq = c.num_attention_heads * hd;
  const int64_t nkv = c.num_key_value_heads * hd, inter = c.intermediate_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  DGPTQ_ASSIGN_OR_RETURN(DeviceTensor h, NewDeviceTensor(b_, n, c.hidden_size));
  DGPTQ_ASSIGN_OR_RETURN(DeviceTensor q, NewDeviceTensor(b_, n, nq));
  DGPTQ_ASSIGN_OR_RETURN(DeviceTensor k, NewDeviceTensor(b_, n, nkv));
  DGPTQ_ASSIGN_OR_RETURN(DeviceTensor v, NewDeviceTensor(b_, n, nkv));
  DGPTQ_ASSIGN_OR_RETURN(DeviceTensor a, NewDeviceTensor(b_, n, nq));
  // Attention block.
  DGPTQ_RETURN_IF_ERROR(b_.RmsNorm(x, w.ptr("input_layernorm.weight"), eps, h.mat));
  DGPTQ_ASSIGN_OR_RETURN(bool go, capture(0, h.mat));
  if (!go) return absl::OkStatus();
  for (auto [m, out] : {std::pair{"self_attn.q_proj", &q}, {"self_attn.k_proj", &k}, {"self_attn.v_proj", &v}}) {
    DGPTQ_RETURN_IF_ERROR(Linear(h.mat, w.mat(std::string(m) + ".weight"), Bias(w, m), out->mat));
  }
  DGPTQ_RETURN_IF_ERROR(b_.Rope(q.mat, c.num_attention_heads, hd, seq_len, inv_freq_.mat.data));
  DGPTQ_RETURN_IF_ERROR(b_.Rope(k.mat, c.num_key_value_heads, hd, seq_len, inv_freq_.mat.data));
  DGPTQ_RETURN_IF_ERROR(b_.Attention(q.mat, k.mat, v.mat, seq_len, c.num_attention_heads,
                                     c.num_key_value_heads, hd, 1.0f / std::sqrt(float(hd)), a.mat));
  DGPTQ_ASSIGN_OR_RETURN(go, capture(1, a.mat));
  if (!go) return absl::OkStatus();
  DGPTQ_RETURN_IF_ERROR(Linear(a.mat, w.mat("self_attn.o_proj.weight"), Bias(w, "self_attn.o_proj"), h.mat));
  DGPTQ_RETURN_IF_ERROR(b_.Add(x, h.mat));
  // MLP block.
  DGPTQ_RETURN_IF_ERROR(b_.RmsNorm(x, w.ptr("post_attention_layernorm.weight"), eps, h.mat));
  DGPTQ_ASSIGN_OR_RETURN(go, capture(2, h.mat));
  if (!go) return absl::OkStatus();
  q = DeviceTensor(), a = DeviceTensor();
  DGPTQ_ASSIGN_OR_RETURN(DeviceTensor g, NewDeviceTensor(b_, n, inter));
  DGPTQ_ASSIGN_OR_RETURN(DeviceTensor u, NewDeviceTensor(b_, n, inter));
  DGPTQ_RETURN_IF_ERROR(Linear(h.mat, w.mat("mlp.gate_proj.weight"), Bias(w, "mlp.gate_proj"), g.mat));
  DGPTQ_RETURN_IF_ERROR(Linear(h.mat, w.mat("mlp.up_proj.weight"), Bias(w, "mlp.up_proj"), u.mat));
  DGPTQ_RETURN_IF_ERROR(b_.SiluMul(g.mat, u.mat, g.mat));
  DGPTQ_ASSIGN_OR_RETURN(go, capture(3, g.mat));
  if (!go) return absl::OkStatus();
  DGPTQ_RETURN_IF_ERROR(Linear(g.mat, w.mat("mlp.down_proj.weight"), Bias(w, "mlp.down_proj"), h.mat));
  return b_.Add(x, h.mat);
}

}  // namespace

absl::StatusOr<std::unique_ptr<DecoderModel>> MakeLlamaModel(const ModelConfig& c,
                                                            kernels::Backend& b) {
  if (c.hidden_act != "silu" && !c.hidden_act.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("hidden_act '%s' is not supported for %s (expected silu)", c.hidden_act, c.model_type));
  }
  if (c.head_dim % 2 != 0) return absl::InvalidArgumentError("head_dim must be even for RoPE");
  DGPTQ_ASSIGN_OR_RETURN(std::vector<float> inv_freq, RopeInvFreq(c));
  return std::unique_ptr<DecoderModel>(new LlamaModel(c, b, std::move(inv_freq)));
}


}  // namespace dgptq::worker
