#include "worker/model/eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "worker/model/model.h"

namespace dgptq::worker {

using kernels::Mat;

absl::Status CheckWindows(const ModelConfig& c, const TokenWindows& w, const char* what) {
  if (w.count <= 0 || w.seq_len <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: no token windows", what));
  }
  if (c.max_position_embeddings > 0 && w.seq_len > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: seq-len %d is longer than the model's max_position_embeddings %d", what, w.seq_len,
        c.max_position_embeddings));
  }
  for (size_t i = 0; i < w.ids.size(); ++i) {
    if (w.ids[i] < 0 || w.ids[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: token id %d at position %d is outside the vocabulary [0, %d)", what, w.ids[i], i,
          c.vocab_size));
    }
  }
  return absl::OkStatus();
}

namespace {

// Final hidden states of every window (before the final norm), layer by layer.
absl::StatusOr<DeviceTensor> RunToHidden(kernels::Backend& b, DecoderModel& model,
                                         ModelReader& r, const TokenWindows& w,
                                         int64_t batch_windows) {
  const ModelConfig& c = r.config();
  const int64_t n = w.count * w.seq_len, L = w.seq_len;
  DGPTQ_ASSIGN_OR_RETURN(kernels::Buffer ids,
                         kernels::UploadNew(b, w.ids.data(), n * sizeof(int32_t)));
  DGPTQ_ASSIGN_OR_RETURN(DeviceTensor x, NewDeviceTensor(b, n, c.hidden_size));
  DGPTQ_RETURN_IF_ERROR(model.Embed(ids.i32(), L, x.mat));
  const CaptureFn none = [](int, const Mat&) -> absl::StatusOr<bool> { return true; };
  for (int layer = 0; layer < model.num_layers(); ++layer) {
    DGPTQ_ASSIGN_OR_RETURN(LayerWeights lw, model.LoadLayer(r, layer));
    for (int64_t w0 = 0; w0 < w.count; w0 += batch_windows) {
      const int64_t nw = std::min(batch_windows, w.count - w0);
      DGPTQ_RETURN_IF_ERROR(
          model.ForwardLayer(lw, x.mat.Block(w0 * L, 0, nw * L, c.hidden_size), L, none));
    }
  }
  return x;
}

}  // namespace

absl::StatusOr<Tensor> ComputeLogits(kernels::Backend& b, ModelReader& r,
                                     const TokenWindows& w) {
  const ModelConfig& c = r.config();
  DGPTQ_RETURN_IF_ERROR(CheckWindows(c, w, "input"));
  DGPTQ_ASSIGN_OR_RETURN(auto model, DecoderModel::Create(c, b));
  DGPTQ_RETURN_IF_ERROR(model->LoadGlobals(r, DecoderModel::Globals::kAll));
  DGPTQ_ASSIGN_OR_RETURN(DeviceTensor x, RunToHidden(b, *model, r, w, 8));
  const int64_t n = w.count * w.seq_len;
  DGPTQ_ASSIGN_OR_RETURN(DeviceTensor logits, NewDeviceTensor(b, n, c.vocab_size));
  DGPTQ_RETURN_IF_ERROR(model->Logits(x.mat, logits.mat));
  Tensor out(DType::kF32, {w.count, w.seq_len, c.vocab_size});
  DGPTQ_RETURN_IF_ERROR(b.Download(logits.buf.data(), out.data(), out.nbytes()));
  return out;
}

absl::StatusOr<EvalResult> EvaluatePerplexity(kernels::Backend& b, ModelReader& r,
                                              const TokenWindows& w, int64_t batch_windows) {
  const auto t0 = std::chrono::steady_clock::now();
  const ModelConfig& c = r.config();
  DGPTQ_RETURN_IF_ERROR(CheckWindows(c, w, "evaluation data"));
  DGPTQ_ASSIGN_OR_RETURN(auto model, DecoderModel::Create(c, b));
  DGPTQ_RETURN_IF_ERROR(model->LoadGlobals(r, DecoderModel::Globals::kAll));
  const int64_t n = w.count * w.seq_len, L = w.seq_len;
  const int64_t bw = std::max<int64_t>(1, batch_windows);
  DGPTQ_ASSIGN_OR_RETURN(DeviceTensor x, RunToHidden(b, *model, r, w, bw));
  // Targets: the next token inside each window; none for a window's last position.
  std::vector<int32_t> targets(n, -1);
  for (int64_t i = 0; i < n; ++i) {
    if ((i + 1) % L != 0) targets[i] = w.ids[i + 1];
  }
  DGPTQ_ASSIGN_OR_RETURN(kernels::Buffer tgt,
                         kernels::UploadNew(b, targets.data(), n * sizeof(int32_t)));
  DGPTQ_ASSIGN_OR_RETURN(kernels::Buffer nll, b.Allocate(n * sizeof(float)));
  DGPTQ_ASSIGN_OR_RETURN(DeviceTensor logits, NewDeviceTensor(b, bw * L, c.vocab_size));
  for (int64_t w0 = 0; w0 < w.count; w0 += bw) {
    const int64_t rows = std::min(bw, w.count - w0) * L;
    const Mat lg = logits.mat.Block(0, 0, rows, c.vocab_size);
    DGPTQ_RETURN_IF_ERROR(model->Logits(x.mat.Block(w0 * L, 0, rows, c.hidden_size), lg));
    DGPTQ_RETURN_IF_ERROR(b.CrossEntropy(lg, tgt.i32() + w0 * L, nll.f32() + w0 * L));
  }
  DGPTQ_ASSIGN_OR_RETURN(double total, b.Sum(nll.f32(), n));
  EvalResult res;
  res.windows = w.count;
  res.predictions = w.count * (L - 1);
  res.mean_nll = total / std::max<int64_t>(1, res.predictions);
  res.perplexity = std::exp(res.mean_nll);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!std::isfinite(res.perplexity)) {
    return absl::InternalError(absl::StrFormat("perplexity is not finite (mean NLL %g)", res.mean_nll));
  }
  return res;
}

}  // namespace dgptq::worker
