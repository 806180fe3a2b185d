// The coordinator planner's balance on Llama-3-8B and Llama-3-70B shapes for 1, 2, 4
// and 8 ranks. Prints one JSON line per (model, world size): each rank's share of the
// total GPTQ cost, the imbalance (max / mean - 1, issue 4 asks <= 0.10), and the
// per-layer critical path relative to its ideal (total / ranks). Figures, not a test.
//
//   bench_planner_balance [samples]   (default 128 calibration samples)
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/model_config.h"
#include "coordinator/planner.h"

namespace {

struct Shape {
  const char* name;
  int hidden, layers, heads, kv_heads, intermediate;
};

constexpr Shape kShapes[] = {
    {"llama-3-8b", 4096, 32, 32, 8, 14336},
    {"llama-3-70b", 8192, 80, 64, 8, 28672},
};

std::string ConfigJson(const Shape& s) {
  return absl::StrFormat(
      R"({"model_type": "llama", "hidden_size": %d, "num_hidden_layers": %d,)"
      R"( "num_attention_heads": %d, "num_key_value_heads": %d, "intermediate_size": %d,)"
      R"( "vocab_size": 128256, "max_position_embeddings": 8192})",
      s.hidden, s.layers, s.heads, s.kv_heads, s.intermediate);
}

// One JSON line for `s` on `world` ranks; returns false on a planning error.
bool Report(const Shape& s, const dgptq::ModelConfig& c, int world, long samples) {
  absl::StatusOr<dgptq::coordinator::Plan> plan = dgptq::coordinator::MakePlan(c, world, samples);
  if (!plan.ok()) {
    std::fprintf(stderr, "%s: %s\n", s.name, std::string(plan.status().message()).c_str());
    return false;
  }
  const double total = std::accumulate(plan->rank_cost.begin(), plan->rank_cost.end(), 0.0);
  std::vector<std::string> shares;
  for (double r : plan->rank_cost) shares.push_back(absl::StrFormat("%.4f", r / total));
  std::vector<std::string> shards;
  for (const auto& sh : plan->shards) shards.push_back(absl::StrFormat("%d", sh.end - sh.begin));
  std::printf(
      "{\"model\": \"%s\", \"ranks\": %d, \"total_cost\": %.4e, \"share\": [%s], "
      "\"imbalance\": %.4f, \"critical_path_over_ideal\": %.4f, \"shard_samples\": [%s]}\n",
      s.name, world, total, absl::StrJoin(shares, ", ").c_str(), plan->Imbalance(),
      plan->CriticalPathCost() / (total / world), absl::StrJoin(shards, ", ").c_str());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const long samples = argc > 1 ? std::atol(argv[1]) : 128;
  for (const Shape& s : kShapes) {
    absl::StatusOr<dgptq::ModelConfig> c = dgptq::ParseModelConfig(ConfigJson(s), s.name);
    if (!c.ok()) {
      std::fprintf(stderr, "%s\n", std::string(c.status().message()).c_str());
      return 1;
    }
    for (int world : {1, 2, 4, 8}) {
      if (!Report(s, *c, world, samples)) return 1;
    }
  }
  return 0;
}
