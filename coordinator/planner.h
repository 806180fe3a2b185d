// The coordinator's tensor-free planner: which rank quantizes which module of
// which decoder layer, and which calibration samples each rank forwards.
//
// A weight is W[rows = out_features, cols = in_features]; its Hessian is H[cols, cols].
// Modules that read the same input (q/k/v; gate/up) share one Hessian and are
// planned as one group with one owner: the owner receives the group's reduced
// Hessian, runs GPTQ on every module of the group and broadcasts the result.
//
// Cost model (DESIGN.md "Plan"): a group costs cols^3 (damping, Cholesky and
// inverse, once per shared Hessian) + rows_total * cols^2 (the GPTQ updates of all
// its rows). Units are multiply-adds up to a constant; only ratios matter.
//
// Assignment, in two passes:
// 1. greedy bin packing (LPT): layer by layer, the layer's groups are taken by
//    descending cost (ties keep the module order) and each goes to the rank whose
//    load is currently the smallest (ties to the lowest rank). Loads accumulate across
//    layers, so the job can balance although a Llama layer has only 4 groups and
//    down_proj alone is ~82% of a Llama-3-8B layer's cost;
// 2. refinement: greedy alone ends 3.1% (4 ranks) and 10.5% (8 ranks) over the mean
//    on Llama-3-8B, so a deterministic local search then moves or swaps single groups
//    off the most loaded rank while that strictly lowers the pair's maximum and does
//    not lengthen any layer's makespan. Result on Llama-3-8B: 0.0%, 0.1%, 0.2% over
//    the mean for 2, 4, 8 ranks (bench_planner_balance prints the figures).
// With per-layer synchronisation the GPTQ wall time is CriticalPathCost(), bounded
// below by the largest group of each layer (down_proj); both passes keep it there.
//
// Sample shards: with base = samples / world_size (integer division), rank r < N-1
// takes [r * base, (r + 1) * base) and the last rank takes [(N-1) * base, samples),
// i.e. base plus the remainder (10 samples on 4 ranks: 2, 2, 2, 4).
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/file_stamp.h"
#include "common/model_config.h"

namespace dgptq::coordinator {

inline constexpr int kMaxWorldSize = 4096;

// One shared-Hessian group of linear modules in one decoder layer.
struct ModuleGroupPlan {
  // Names relative to the layer prefix, e.g. {"self_attn.q_proj", "self_attn.k_proj",
  // "self_attn.v_proj"}; the weight tensor is LayerPrefix(c, layer) + name + ".weight".
  std::vector<std::string> modules;
  std::vector<int64_t> module_rows;  // out_features of each module, parallel to `modules`
  int64_t rows_total = 0;            // sum of module_rows
  int64_t cols = 0;                  // in_features = Hessian size
  double cost = 0;                   // cols^3 + rows_total * cols^2
  int owner_rank = -1;
};

struct LayerPlan {
  int layer = 0;
  std::vector<ModuleGroupPlan> groups;  // in module order (attention first), not cost order
};

// Calibration samples [begin, end) forwarded by `rank`.
struct SampleShard {
  int rank = 0;
  int64_t begin = 0;
  int64_t end = 0;
};

struct Plan {
  int world_size = 0;
  std::vector<LayerPlan> layers;
  std::vector<SampleShard> shards;  // one per rank, in rank order
  std::vector<double> rank_cost;    // total cost owned by each rank, over all layers
  std::vector<FileStamp> model_files;  // PlanCheckpoint: the files it read

  // max(rank_cost) / mean(rank_cost) - 1: 0 is perfect balance; 0 when nothing is planned.
  double Imbalance() const;
  // Sum over layers of the largest per-rank cost within that layer: the GPTQ time of
  // the job when every rank waits for the whole layer before the next one. Its ideal
  // is sum(rank_cost) / world_size.
  double CriticalPathCost() const;
};

// "model.layers.N." (Llama family) or "model.decoder.layers.N." (OPT).
std::string LayerPrefix(const ModelConfig& c, int layer);

// The shared-Hessian groups of one decoder layer of `c`, costed, owner unset (-1).
// InvalidArgument for an unsupported model_type or non-positive sizes.
absl::StatusOr<std::vector<ModuleGroupPlan>> LayerGroups(const ModelConfig& c);

// Cost of GPTQ on a group of `rows_total` rows over a `cols`-sized Hessian.
double GroupCost(int64_t rows_total, int64_t cols);

// Plans `c` on `world_size` ranks with `samples` calibration samples.
// InvalidArgument for world_size outside [1, kMaxWorldSize], samples < world_size,
// or an unsupported model_type (the message names the supported ones).
absl::StatusOr<Plan> MakePlan(const ModelConfig& c, int world_size, int64_t samples);

// Reads `model_dir`/config.json and the safetensors headers (never tensor data), plans
// as MakePlan and checks that every planned module's weight exists with the shape the
// config implies. NotFound for a missing config.json or checkpoint; InvalidArgument
// naming the tensor for a missing weight or a wrong shape, or as MakePlan.
absl::StatusOr<Plan> PlanCheckpoint(const std::string& model_dir, int world_size, int64_t samples);

}  // namespace dgptq::coordinator
