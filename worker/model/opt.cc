// OPT (facebook/opt-*): learned positions offset by 2, pre-LayerNorm blocks with
// biases everywhere, ReLU MLP, lm_head usually tied to the token embedding.
#include <cmath>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "worker/model/model.h"

namespace dgptq::worker {
namespace {

using kernels::Mat;

// OPT's learned position table starts at index 2 (a fairseq convention).
constexpr int64_t kPositionOffset = 2;

class OptModel final : public DecoderModel {
 public:
  OptModel(const ModelConfig& c, kernels::Backend& b) : DecoderModel(c, b) {
    groups_ = {{{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}},
               {{"self_attn.out_proj"}},
               {{"fc1"}},
               {{"fc2"}}};
  }

  std::string LayerPrefix(int layer) const override {
    return absl::StrFormat("model.decoder.layers.%d.", layer);
  }
  const std::vector<LinearGroup>& Groups() const override { return groups_; }

  Shape LinearShape(const std::string& m) const override {
    const int64_t h = config_.hidden_size, f = config_.intermediate_size;
    if (m == "fc1") return {f, h};
    if (m == "fc2") return {h, f};
    return {h, h};
  }

  std::vector<std::string> GlobalTensors(const ModelReader& r) const override {
    std::vector<std::string> names = {"model.decoder.embed_tokens.weight",
                                      "model.decoder.embed_positions.weight",
                                      "model.decoder.final_layer_norm.weight",
                                      "model.decoder.final_layer_norm.bias"};
    if (r.HasTensor("lm_head.weight")) names.push_back("lm_head.weight");
    return names;
  }

  absl::StatusOr<LayerWeights> LoadLayer(ModelReader& r, int layer) override {
    LayerWeights w;
    w.layer = layer;
    const std::string p = LayerPrefix(layer);
    const int64_t h = config_.hidden_size;
    for (const char* ln : {"self_attn_layer_norm", "final_layer_norm"}) {
      for (const char* part : {".weight", ".bias"}) {
        const std::string name = std::string(ln) + part;
        DGPTQ_ASSIGN_OR_RETURN(w.t[name], LoadTensor(b_, r, p + name, {h}));
      }
    }
    DGPTQ_RETURN_IF_ERROR(
        LoadLinears(r, p, [this](const std::string&) { return config_.enable_bias; }, &w));
    return w;
  }

  absl::Status ForwardLayer(const LayerWeights& w, const Mat& x, int64_t seq_len,
                            const CaptureFn& capture) override;

  absl::Status LoadGlobals(ModelReader& r, Globals which) override {
    const ModelConfig& c = config_;
    DGPTQ_ASSIGN_OR_RETURN(embed_, LoadTensor(b_, r, "model.decoder.embed_tokens.weight",
                                               {c.vocab_size, c.hidden_size}));
    DGPTQ_ASSIGN_OR_RETURN(pos_, LoadTensor(b_, r, "model.decoder.embed_positions.weight",
                                             {c.max_position_embeddings + kPositionOffset, c.hidden_size}));
    if (which == Globals::kEmbeddings) return absl::OkStatus();
    DGPTQ_ASSIGN_OR_RETURN(ln_w_, LoadTensor(b_, r, "model.decoder.final_layer_norm.weight", {c.hidden_size}));
    DGPTQ_ASSIGN_OR_RETURN(ln_b_, LoadTensor(b_, r, "model.decoder.final_layer_norm.bias", {c.hidden_size}));
    head_mat_ = embed_.mat;
    if (r.HasTensor("lm_head.weight") && !c.tie_word_embeddings) {
      DGPTQ_ASSIGN_OR_RETURN(head_, LoadTensor(b_, r, "lm_head.weight", {c.vocab_size, c.hidden_size}));
      head_mat_ = head_.mat;
    }
    return absl::OkStatus();
  }
  void DropGlobals() override { embed_ = {}, pos_ = {}, ln_w_ = {}, ln_b_ = {}, head_ = {}, head_mat_ = {}; }

  absl::Status Embed(const int32_t* ids, int64_t seq_len, const Mat& out) override {
    DGPTQ_RETURN_IF_ERROR(b_.Embedding(ids, embed_.mat, out));
    // Positions 0..seq_len-1 of every window, offset by 2 into the learned table.
    std::vector<int32_t> pos(out.rows);
    for (int64_t r = 0; r < out.rows; ++r) pos[r] = static_cast<int32_t>(r % seq_len + kPositionOffset);
    DGPTQ_ASSIGN_OR_RETURN(kernels::Buffer dpos,
                           kernels::UploadNew(b_, pos.data(), pos.size() * sizeof(int32_t)));
    DGPTQ_ASSIGN_OR_RETURN(DeviceTensor pe, NewDeviceTensor(b_, out.rows, out.cols));
    DGPTQ_RETURN_IF_ERROR(b_.Embedding(dpos.i32(), pos_.mat, pe.mat));
    return b_.Add(out, pe.mat);
  }

  absl::Status Logits(const Mat& x, const Mat& logits) override {
    DGPTQ_RETURN_IF_ERROR(b_.LayerNorm(x, ln_w_.mat.data, ln_b_.mat.data,
                                       static_cast<float>(config_.layer_norm_eps), x));
    return Linear(x, head_mat_, nullptr, logits);
  }

 private:
  const float* Bias(const LayerWeights& w, const std::string& m) const {
    return w.has(m + ".bias") ? w.ptr(m + ".bias") : nullptr;
  }
  std::vector<LinearGroup> groups_;
  DeviceTensor embed_, pos_, ln_w_, ln_b_, head_;
  Mat head_mat_;
};

absl::Status OptModel::ForwardLayer(const LayerWeights& w, const Mat& x, int64_t seq_len,
                                    const CaptureFn& capture) {
  const ModelConfig& c = config_;
  const int64_t n = x.rows, h = c.hidden_size, heads = c.num_attention_heads, hd = c.head_dim;
  const float eps = static_cast<float>(c.layer_norm_eps);
  DGPTQ_ASSIGN_OR_RETURN(DeviceTensor t, NewDeviceTensor(b_, n, h));
  DGPTQ_ASSIGN_OR_RETURN(DeviceTensor q, NewDeviceTensor(b_, n, h));
  DGPTQ_ASSIGN_OR_RETURN(DeviceTensor k, NewDeviceTensor(b_, n, h));
  DGPTQ_ASSIGN_OR_RETURN(DeviceTensor v, NewDeviceTensor(b_, n, h));
  DGPTQ_RETURN_IF_ERROR(b_.LayerNorm(x, w.ptr("self_attn_layer_norm.weight"),
                                     w.ptr("self_attn_layer_norm.bias"), eps, t.mat));
  DGPTQ_ASSIGN_OR_RETURN(bool go, capture(0, t.mat));
  if (!go) return absl::OkStatus();
  DGPTQ_RETURN_IF_ERROR(Linear(t.mat, w.mat("self_attn.q_proj.weight"), Bias(w, "self_attn.q_proj"), q.mat));
  DGPTQ_RETURN_IF_ERROR(Linear(t.mat, w.mat("self_attn.k_proj.weight"), Bias(w, "self_attn.k_proj"), k.mat));
  DGPTQ_RETURN_IF_ERROR(Linear(t.mat, w.mat("self_attn.v_proj.weight"), Bias(w, "self_attn.v_proj"), v.mat));
  DGPTQ_RETURN_IF_ERROR(b_.Attention(q.mat, k.mat, v.mat, seq_len, heads, heads, hd,
                                     1.0f / std::sqrt(static_cast<float>(hd)), t.mat));
  DGPTQ_ASSIGN_OR_RETURN(go, capture(1, t.mat));
  if (!go) return absl::OkStatus();
  DGPTQ_RETURN_IF_ERROR(Linear(t.mat, w.mat("self_attn.out_proj.weight"), Bias(w, "self_attn.out_proj"), q.mat));
  DGPTQ_RETURN_IF_ERROR(b_.Add(x, q.mat));
  DGPTQ_RETURN_IF_ERROR(b_.LayerNorm(x, w.ptr("final_layer_norm.weight"), w.ptr("final_layer_norm.bias"), eps, t.mat));
  DGPTQ_ASSIGN_OR_RETURN(go, capture(2, t.mat));
  if (!go) return absl::OkStatus();
  DGPTQ_ASSIGN_OR_RETURN(DeviceTensor f, NewDeviceTensor(b_, n, c.intermediate_size));
  DGPTQ_RETURN_IF_ERROR(Linear(t.mat, w.mat("fc1.weight"), Bias(w, "fc1"), f.mat));
  DGPTQ_RETURN_IF_ERROR(b_.Relu(f.mat));
  DGPTQ_ASSIGN_OR_RETURN(go, capture(3, f.mat));
  if (!go) return absl::OkStatus();
  DGPTQ_RETURN_IF_ERROR(Linear(f.mat, w.mat("fc2.weight"), Bias(w, "fc2"), t.mat));
  return b_.Add(x, t.mat);
}

}  // namespace

absl::StatusOr<std::unique_ptr<DecoderModel>> MakeOptModel(const ModelConfig& c,
                                                          kernels::Backend& b) {
  if (!c.do_layer_norm_before) {
    return absl::InvalidArgumentError("OPT with do_layer_norm_before=false (opt-350m) is not supported");
  }
  if (c.word_embed_proj_dim != 0 && c.word_embed_proj_dim != c.hidden_size) {
    return absl::InvalidArgumentError("OPT with word_embed_proj_dim != hidden_size is not supported");
  }
  if (c.hidden_act != "relu" && !c.hidden_act.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("OPT activation_function '%s' is not supported (expected relu)", c.hidden_act));
  }
  return std::unique_ptr<DecoderModel>(new OptModel(c, b));
}

}  // namespace dgptq::worker
