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
#include "kernels/packing.h"
#include "worker/comm/communicator.h"
#include "worker/output/hf_quant_config.h"
#include "worker/output/model_writer.h"

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
  // An earlier run's partial output (<out>.partial): kOff starts over; kIfMatching and
  // kRequired keep its finished layers when it was made with the same settings (kRequired
  // refuses other settings) and go on from the first unfinished layer. The output is the
  // same as an uninterrupted run's, whatever the number of ranks before and after.
  ResumeMode resume = ResumeMode::kOff;
  kernels::DeviceKind device = kernels::DeviceKind::kCpu;
  int cpu_threads = 0;  // CPU backend threads, 0: all cores (workers sharing a host set it)
  int gpu = 0;          // CUDA device ordinal
  int64_t samples = 128;
  int64_t seq_len = 2048;
  uint64_t seed = 0;
  // Windows per forward chunk (bounds scratch memory). 1, the default, makes every GEMM
  // the same shape whatever the sharding, so a job's codes do not depend on how many
  // ranks ran it (BLAS results can depend on the row count of a GEMM).
  int64_t batch_windows = 1;
  // Reads the next layer's weights from disk into the page cache while this one computes.
  bool prefetch = true;
  // Precision of the forward and Hessian GEMMs (GPTQ itself is always fp32). kAuto: bf16
  // operands with fp32 accumulation (tensor cores) on CUDA for a bf16 model, fp32
  // otherwise. The codes depend on it (it is part of what a resumed output must match).
  enum class Gemm { kAuto, kFp32, kBf16 };
  Gemm gemm = Gemm::kAuto;
  // Whether this run's forward and Hessian GEMMs are bf16, for a model of dtype `model`.
  bool Bf16Gemms(DType model) const;
  // InvalidArgument naming the flag.
  absl::Status Validate() const;
};

// One progress event: a phase of a layer started/finished, or a module quantized.
struct ProgressEvent {
  // "calibration", "load", "forward", "hessian", "reduce", "quantize", "broadcast",
  // "propagate", "write". Every rank ends each layer with a "write" event (layer >= 0), written or not.
  std::string phase;
  int layer = -1;      // -1 outside the layers
  int layers = 0;
  std::string module;  // set for quantize events
  double loss = 0;
  double seconds = 0;  // of the finished phase / module
  int64_t bytes = 0;   // communicator bytes sent + received in the phase (reduce, broadcast)
  int64_t tokens = 0;  // calibration tokens the phase forwarded (forward)
  int64_t peak_device_bytes = 0;  // the backend's peak memory so far (Backend::PeakDeviceBytes)
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
  int resumed_layers = 0;  // layers taken from a partial output
};

absl::StatusOr<QuantizeReport> Quantize(const QuantizeOptions& opts, const ProgressFn& progress);

// This process's part of a job run by `world` ranks (DESIGN.md "One job, end to end"):
// every rank draws the same calibration windows and forwards only its shard
// [window_begin, window_end); the Hessian sum of each linear group is reduced onto the
// group's owner, which runs GPTQ on the group's modules and broadcasts the packed codes,
// scales, zeros and g_idx; every rank rebuilds the quantized weights from those bytes
// for the next forward, so all ranks hold bit-identical layers. Each rank writes the
// modules it owns, one part per layer, into the shared partial output (rank 0 adds the
// norms and, once every rank is done, the embeddings and head, and publishes the
// checkpoint); the storage must be shared. The Hessian of every group is normalized by the
// job's total token count, so the codes do not depend on how the samples are sharded
// beyond floating-point summation order. With world == 1 this is Quantize().
struct RankContext {
  int rank = 0;
  int world = 1;
  Communicator* comm = nullptr;  // required when world > 1 (host or NCCL)
  // Rank that quantizes the linear group of `layer` whose first module is `module`
  // (e.g. "self_attn.q_proj" for q/k/v); unset: rank 0. Every rank must get the same
  // answer; a rank outside [0, world) fails the run naming the group.
  std::function<int(int layer, const std::string& module)> owner;
  int64_t window_begin = 0;
  int64_t window_end = -1;  // -1: to the last window
  // Polled between phases; true stops the run with Cancelled.
  std::function<bool()> cancelled;
  // Called before each layer's weights are read; an error fails the run (the worker checks
  // that the model files are still those the plan was made from).
  std::function<absl::Status()> inputs_unchanged;
};
absl::StatusOr<QuantizeReport> QuantizeRank(const QuantizeOptions& opts, const RankContext& ctx,
                                            const ProgressFn& progress);

// The wire form of a module's result, broadcast by its owner: a header {rows, cols,
// groups}, the codes packed `bits` per code, fp32 scales and zeros, int32 g_idx. Its size
// follows from the shape and the config alone, so receivers know it in advance.
size_t SerializedQuantizedBytes(int64_t rows, int64_t cols, const QuantConfig& cfg);
std::string SerializeQuantized(const kernels::QuantizedWeight& q);
// InvalidArgument when `bytes` is not the serialization of a [rows, cols] module under
// `cfg` (wrong size or header, codes out of range, bad g_idx).
absl::StatusOr<kernels::QuantizedWeight> DeserializeQuantized(const std::string& bytes,
                                                              int64_t rows, int64_t cols,
                                                              const QuantConfig& cfg);

// Peak resident set size of this process (VmHWM), 0 if unknown.
int64_t PeakRssBytes();

}  // namespace dgptq::worker
