// Perplexity over token windows (the GPTQ paper's protocol): every window of L tokens
// is scored on its L - 1 next-token predictions; the mean NLL over all predictions is
// exponentiated.
#pragma once

#include "absl/status/statusor.h"
#include "common/token_data.h"
#include "kernels/backend.h"
#include "worker/output/model_reader.h"

namespace dgptq::worker {

struct EvalResult {
  double mean_nll = 0;
  double perplexity = 0;
  int64_t windows = 0;
  int64_t predictions = 0;
  double seconds = 0;
};

// Runs the model layer by layer over all windows (activations of every window stay on
// the device; `batch_windows` bounds the logits buffer). InvalidArgument for token ids
// outside the vocabulary or windows longer than max_position_embeddings.
absl::StatusOr<EvalResult> EvaluatePerplexity(kernels::Backend& b, ModelReader& r,
                                              const TokenWindows& windows,
                                              int64_t batch_windows = 8);

// Logits [count, seq_len, vocab] of every window, on the host.
absl::StatusOr<Tensor> ComputeLogits(kernels::Backend& b, ModelReader& r,
                                     const TokenWindows& windows);

// Checks ids in [0, vocab) and seq_len against the config.
absl::Status CheckWindows(const ModelConfig& c, const TokenWindows& w, const char* what);

}  // namespace dgptq::worker
