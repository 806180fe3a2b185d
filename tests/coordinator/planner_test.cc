#include "coordinator/planner.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace dgptq::coordinator {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

ModelConfig Llama(int hidden, int layers, int heads, int kv_heads, int intermediate) {
  const std::string json =
      absl::StrFormat(R"({"model_type": "llama", "hidden_size": %d, "num_hidden_layers": %d,)"
                      R"( "num_attention_heads": %d, "num_key_value_heads": %d,)"
                      R"( "intermediate_size": %d, "vocab_size": 128256})",
                      hidden, layers, heads, kv_heads, intermediate);
  absl::StatusOr<ModelConfig> c = ParseModelConfig(json, "test-config.json");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

ModelConfig Llama3_8B() { return Llama(4096, 32, 32, 8, 14336); }

// Checks the invariants every plan has: each layer lists every module once, owners are
// valid ranks and rank_cost is the sum of the owned groups' costs.
void ExpectConsistent(const Plan& plan, const ModelConfig& c, int world) {
  absl::StatusOr<std::vector<ModuleGroupPlan>> groups = LayerGroups(c);
  ASSERT_TRUE(groups.ok()) << groups.status();
  std::vector<std::string> want;
  for (const ModuleGroupPlan& g : *groups)
    want.insert(want.end(), g.modules.begin(), g.modules.end());
  std::sort(want.begin(), want.end());
  ASSERT_EQ(plan.world_size, world);
  ASSERT_EQ(plan.layers.size(), static_cast<size_t>(c.num_hidden_layers));
  std::vector<double> cost(world, 0.0);
  for (size_t l = 0; l < plan.layers.size(); ++l) {
    EXPECT_EQ(plan.layers[l].layer, static_cast<int>(l));
    std::vector<std::string> got;
    for (const ModuleGroupPlan& g : plan.layers[l].groups) {
      ASSERT_GE(g.owner_rank, 0);
      ASSERT_LT(g.owner_rank, world);
      cost[g.owner_rank] += g.cost;
      got.insert(got.end(), g.modules.begin(), g.modules.end());
    }
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, want) << "layer " << l;
  }
  ASSERT_EQ(plan.rank_cost.size(), static_cast<size_t>(world));
  for (int r = 0; r < world; ++r) EXPECT_NEAR(plan.rank_cost[r], cost[r], 1e-9 * cost[r]);
}

TEST(PlannerTest, Llama3_8BGroupShapesAndCosts) {
  absl::StatusOr<std::vector<ModuleGroupPlan>> g = LayerGroups(Llama3_8B());
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_EQ(g->size(), 4u);
  EXPECT_THAT((*g)[0].modules,
              ElementsAre("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"));
  EXPECT_THAT((*g)[0].module_rows, ElementsAre(4096, 1024, 1024));
  EXPECT_EQ((*g)[0].rows_total, 6144);
  EXPECT_EQ((*g)[0].cols, 4096);
  EXPECT_THAT((*g)[1].modules, ElementsAre("self_attn.o_proj"));
  EXPECT_THAT((*g)[2].modules, ElementsAre("mlp.gate_proj", "mlp.up_proj"));
  EXPECT_EQ((*g)[2].rows_total, 2 * 14336);
  EXPECT_THAT((*g)[3].modules, ElementsAre("mlp.down_proj"));
  EXPECT_EQ((*g)[3].cols, 14336);
  // cols^3 + rows_total * cols^2.
  EXPECT_DOUBLE_EQ((*g)[3].cost, 14336.0 * 14336 * 14336 + 4096.0 * 14336 * 14336);
  EXPECT_DOUBLE_EQ((*g)[0].cost, GroupCost(6144, 4096));
  for (const ModuleGroupPlan& x : *g) EXPECT_EQ(x.owner_rank, -1);
}

class BalanceTest : public ::testing::TestWithParam<int> {};

TEST_P(BalanceTest, Llama3_8BWithinTenPercentOfIdeal) {
  const int world = GetParam();
  const ModelConfig c = Llama3_8B();
  absl::StatusOr<Plan> plan = MakePlan(c, world, 128);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ExpectConsistent(*plan, c, world);
  EXPECT_LE(plan->Imbalance(), 0.10);
  EXPECT_GE(plan->Imbalance(), 0.0);
  // The per-layer critical path stays at its floor: down_proj alone in every layer.
  const double down = GroupCost(4096, 14336);
  EXPECT_NEAR(plan->CriticalPathCost(), 32 * down, 1e-9 * 32 * down);
}

INSTANTIATE_TEST_SUITE_P(Ranks, BalanceTest, ::testing::Values(2, 4, 8));

TEST(PlannerTest, Llama3_70BBalancesOnEightRanks) {
  const ModelConfig c = Llama(8192, 80, 64, 8, 28672);
  absl::StatusOr<Plan> plan = MakePlan(c, 8, 128);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ExpectConsistent(*plan, c, 8);
  EXPECT_LE(plan->Imbalance(), 0.10);
}

TEST(PlannerTest, OneRankGetsEverything) {
  const ModelConfig c = Llama3_8B();
  absl::StatusOr<Plan> plan = MakePlan(c, 1, 7);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ExpectConsistent(*plan, c, 1);
  for (const LayerPlan& l : plan->layers) {
    for (const ModuleGroupPlan& g : l.groups) EXPECT_EQ(g.owner_rank, 0);
  }
  ASSERT_EQ(plan->shards.size(), 1u);
  EXPECT_EQ(plan->shards[0].begin, 0);
  EXPECT_EQ(plan->shards[0].end, 7);
  EXPECT_EQ(plan->Imbalance(), 0.0);
}

TEST(PlannerTest, DeterministicAndGreedyTiesGoToLowRanks) {
  const ModelConfig c = Llama3_8B();
  absl::StatusOr<Plan> a = MakePlan(c, 4, 64);
  absl::StatusOr<Plan> b = MakePlan(c, 4, 64);
  ASSERT_TRUE(a.ok() && b.ok());
  for (size_t l = 0; l < a->layers.size(); ++l) {
    for (size_t g = 0; g < a->layers[l].groups.size(); ++g) {
      EXPECT_EQ(a->layers[l].groups[g].owner_rank, b->layers[l].groups[g].owner_rank);
    }
  }
  // One layer on empty ranks (nothing to refine): largest first to the lowest idle rank.
  absl::StatusOr<Plan> one = MakePlan(Llama(4096, 1, 32, 8, 14336), 6, 6);
  ASSERT_TRUE(one.ok()) << one.status();
  std::vector<int> owners;  // q/k/v, o, gate/up, down
  for (const ModuleGroupPlan& g : one->layers[0].groups) owners.push_back(g.owner_rank);
  EXPECT_THAT(owners, ElementsAre(2, 3, 1, 0));
  EXPECT_EQ(one->rank_cost[4], 0.0);
  EXPECT_EQ(one->rank_cost[5], 0.0);
}

TEST(PlannerTest, ManyRanksMoreThanGroups) {
  const ModelConfig c = Llama3_8B();
  absl::StatusOr<Plan> plan = MakePlan(c, kMaxWorldSize, kMaxWorldSize);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ExpectConsistent(*plan, c, kMaxWorldSize);
  // 128 groups on 4096 ranks: every group gets a rank of its own.
  EXPECT_EQ(
      std::count_if(plan->rank_cost.begin(), plan->rank_cost.end(), [](double x) { return x > 0; }),
      128);
}

struct ShardCase {
  int world;
  int64_t samples;
};

class ShardTest : public ::testing::TestWithParam<ShardCase> {};

TEST_P(ShardTest, ContiguousCoverLastTakesRest) {
  const auto [world, samples] = GetParam();
  absl::StatusOr<Plan> plan = MakePlan(Llama(64, 2, 4, 2, 128), world, samples);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->shards.size(), static_cast<size_t>(world));
  const int64_t base = samples / world;
  int64_t next = 0;
  for (int r = 0; r < world; ++r) {
    const SampleShard& s = plan->shards[r];
    EXPECT_EQ(s.rank, r);
    EXPECT_EQ(s.begin, next);
    EXPECT_EQ(s.end - s.begin, r + 1 == world ? samples - (world - 1) * base : base);
    EXPECT_GE(s.end - s.begin, 1);
    next = s.end;
  }
  EXPECT_EQ(next, samples);
}

INSTANTIATE_TEST_SUITE_P(Cases, ShardTest,
                         ::testing::Values(ShardCase{1, 1}, ShardCase{4, 10}, ShardCase{3, 3},
                                           ShardCase{8, 15}, ShardCase{2, 128},
                                           ShardCase{7, 1000003}));

TEST(PlannerTest, TenSamplesOnFourRanks) {
  absl::StatusOr<Plan> plan = MakePlan(Llama(64, 2, 4, 2, 128), 4, 10);
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::vector<int64_t> sizes;
  for (const SampleShard& s : plan->shards) sizes.push_back(s.end - s.begin);
  EXPECT_THAT(sizes, ElementsAre(2, 2, 2, 4));
}

TEST(PlannerTest, OptModuleNames) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(
      R"({"model_type": "opt", "hidden_size": 768, "ffn_dim": 3072,)"
      R"( "num_hidden_layers": 12, "num_attention_heads": 12, "vocab_size": 50272})",
      "opt.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(LayerPrefix(*c, 3), "model.decoder.layers.3.");
  absl::StatusOr<Plan> plan = MakePlan(*c, 2, 16);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ExpectConsistent(*plan, *c, 2);
  const std::vector<ModuleGroupPlan>& g = plan->layers[0].groups;
  ASSERT_EQ(g.size(), 4u);
  EXPECT_THAT(g[0].modules,
              ElementsAre("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"));
  EXPECT_THAT(g[1].modules, ElementsAre("self_attn.out_proj"));
  EXPECT_THAT(g[2].modules, ElementsAre("fc1"));
  EXPECT_EQ(g[2].rows_total, 3072);
  EXPECT_EQ(g[2].cols, 768);
  EXPECT_THAT(g[3].modules, ElementsAre("fc2"));
  EXPECT_EQ(g[3].rows_total, 768);
  EXPECT_EQ(g[3].cols, 3072);
  EXPECT_EQ(LayerPrefix(Llama3_8B(), 0), "model.layers.0.");
}

void ExpectInvalid(const absl::StatusOr<Plan>& plan, const std::string& text) {
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << plan.status();
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr(text));
}

TEST(PlannerTest, BadInputsAreInvalidArgument) {
  const ModelConfig c = Llama3_8B();
  ExpectInvalid(MakePlan(c, 0, 10), "world_size");
  ExpectInvalid(MakePlan(c, -3, 10), "world_size");
  ExpectInvalid(MakePlan(c, kMaxWorldSize + 1, 100000), "world_size");
  ExpectInvalid(MakePlan(c, 4, 3), "3 calibration samples");
  ExpectInvalid(MakePlan(c, 1, 0), "calibration samples");
  ModelConfig gpt2 = c;
  gpt2.model_type = "gpt2";
  ExpectInvalid(MakePlan(gpt2, 2, 8), "unsupported model_type 'gpt2'");
  ModelConfig empty = c;
  empty.num_hidden_layers = 0;
  ExpectInvalid(MakePlan(empty, 2, 8), "num_hidden_layers");
  ModelConfig zero = c;
  zero.intermediate_size = 0;
  ExpectInvalid(MakePlan(zero, 2, 8), "intermediate_size");
}

std::string TinyModel() {
  const std::string dir = std::string(DGPTQ_SOURCE_DIR) + "/../shared/models/tinystories-llama-3m";
  return std::filesystem::exists(std::string(DGPTQ_SOURCE_DIR) + "/../shared") &&
                 std::filesystem::exists(dir + "/config.json")
             ? dir
             : "";
}

// A copy of TinyModel() with config.json edited by replacing `from` with `to`; the
// weights are a symlink (only their header is ever read).
void CopyWithConfigEdit(const std::string& src, const std::string& dst, const std::string& from,
                        const std::string& to) {
  std::ifstream in(src + "/config.json");
  std::stringstream text;
  text << in.rdbuf();
  std::string config = text.str();
  const size_t at = config.find(from);
  ASSERT_NE(at, std::string::npos) << from;
  config.replace(at, from.size(), to);
  std::ofstream(dst + "/config.json") << config;
  std::filesystem::create_symlink(src + "/model.safetensors", dst + "/model.safetensors");
}

TEST(PlanCheckpointTest, TinyStoriesLlama) {
  const std::string dir = TinyModel();
  if (dir.empty()) GTEST_SKIP() << "no ../shared/models/tinystories-llama-3m";
  absl::StatusOr<Plan> plan = PlanCheckpoint(dir, 3, 32);
  ASSERT_TRUE(plan.ok()) << plan.status();
  absl::StatusOr<ModelConfig> c = LoadModelConfig(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  ExpectConsistent(*plan, *c, 3);
  EXPECT_EQ(plan->layers.size(), 4u);
  EXPECT_EQ(plan->layers[0].groups[3].cols, 688);  // down_proj reads intermediate_size
}

TEST(PlanCheckpointTest, WrongIntermediateSizeNamesTheTensor) {
  const std::string dir = TinyModel();
  if (dir.empty()) GTEST_SKIP() << "no ../shared/models/tinystories-llama-3m";
  testing::TempDir tmp;
  CopyWithConfigEdit(dir, tmp.path(), "\"intermediate_size\": 688", "\"intermediate_size\": 700");
  absl::StatusOr<Plan> plan = PlanCheckpoint(tmp.path(), 2, 8);
  ExpectInvalid(plan, "'model.layers.0.mlp.gate_proj.weight' has shape [688, 256]");
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("[700, 256]"));
}

TEST(PlanCheckpointTest, MissingLayerNamesTheTensor) {
  const std::string dir = TinyModel();
  if (dir.empty()) GTEST_SKIP() << "no ../shared/models/tinystories-llama-3m";
  testing::TempDir tmp;
  CopyWithConfigEdit(dir, tmp.path(), "\"num_hidden_layers\": 4", "\"num_hidden_layers\": 5");
  ExpectInvalid(PlanCheckpoint(tmp.path(), 2, 8),
                "no tensor 'model.layers.4.self_attn.q_proj.weight'");
}

TEST(PlanCheckpointTest, MissingDirectoryIsNotFound) {
  testing::TempDir tmp;
  absl::StatusOr<Plan> plan = PlanCheckpoint(tmp / "nope", 1, 1);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kNotFound) << plan.status();
}

}  // namespace
}  // namespace dgptq::coordinator
