// The sequential GPTQ pipeline in one process (DESIGN.md "Per decoder layer"): stream
// a layer's weights, forward the calibration activations capturing every linear
// group's input, accumulate Hessian sums, quantize each module, forward again with
// the quantized weights to make the next layer's input, append the layer's tensors to
// the output. Memory: one layer's weights + the activations + one group's Hessian.
// `dgptq quantize` and (rank by rank) the worker daemon run this code.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/quant_config.h"
#include "kernels/backend.h"
#include "worker/output/hf_quant_config.h"

namespace dgptq::worker {

struct QuantizeOptions {
  std::string model_dir;
  std::string out_dir;
  std::string calib_path;  // .txt (tokenized with the model's tokenizer) or token ids
  OutputFormat format = OutputFormat::kGptq;
  QuantConfig quant;
  bool rtn = false;              // round to nearest (no calibration)
  bool true_sequential = false;  // re-forward after each group (q/k/v, o, gate/up, down)
  bool overwrite = false;
  kernels::DeviceKind device = kernels::DeviceKind::kCpu;
  int64_t samples = 128;
  int64_t seq_len = 2048;
  uint64_t seed = 0;
  int64_t batch_windows = 16;  // windows per forward chunk (bounds scratch memory)
  // InvalidArgument naming the flag.
  absl::Status Validate() const;
};

// One progress event: a phase of a layer started/finished, or a module quantized.
struct ProgressEvent {
  std::string phase;   // "calibration", "load", "forward", "quantize", "propagate", "write", "done"
  int layer = -1;      // -1 outside the layers
  int layers = 0;
  std::string module;  // set for quantize events
  double loss = 0;
  double seconds = 0;  // of the finished phase / module
};
using ProgressFn = std::function<void(const ProgressEvent&)>;

struct ModuleReport {
  std::string name;
  int64_t rows = 0, cols = 0;
  double loss = 0;
  float damp = 0;
  int damp_raises = 0;
  double seconds = 0;
};

struct QuantizeReport {
  std::vector<ModuleReport> modules;
  std::vector<std::pair<std::string, double>> phase_seconds;  // summed over layers
  int64_t samples = 0, seq_len = 0;
  int64_t peak_rss_bytes = 0;
  int64_t peak_device_bytes = 0;
  double total_seconds = 0;
  std::string device;
};

absl::StatusOr<QuantizeReport> Quantize(const QuantizeOptions& opts, const ProgressFn& progress);

// Peak resident set size of this process (VmHWM), 0 if unknown.
int64_t PeakRssBytes();

}  // namespace dgptq::worker
