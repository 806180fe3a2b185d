#include "common/model_config.h"

#include <filesystem>
#include <functional>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace dgptq {
namespace {

using json = nlohmann::json;

json BaseLlama() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", 64},
          {"intermediate_size", 172},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 8},
          {"vocab_size", 512}};
}

absl::StatusOr<ModelConfig> Parse(const json& j) { return ParseModelConfig(j.dump(), "cfg.json"); }

absl::StatusOr<ModelConfig> ParseEdited(const std::function<void(json&)>& edit) {
  json j = BaseLlama();
  edit(j);
  return Parse(j);
}

std::string SharedModels() {
  const std::string shared = std::string(DGPTQ_SOURCE_DIR) + "/../shared/models";
  return std::filesystem::exists(shared) ? shared : "";
}

TEST(ModelConfigTest, Stories260k) {
  if (SharedModels().empty()) GTEST_SKIP() << "no shared models";
  absl::StatusOr<ModelConfig> c = LoadModelConfig(SharedModels() + "/stories260k-llama");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_type, "llama");
  EXPECT_EQ(c->architecture, "LlamaForCausalLM");
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->intermediate_size, 172);
  EXPECT_EQ(c->num_hidden_layers, 5);
  EXPECT_EQ(c->num_attention_heads, 8);
  EXPECT_EQ(c->num_key_value_heads, 4);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_EQ(c->vocab_size, 512);
  EXPECT_EQ(c->max_position_embeddings, 512);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_EQ(c->rope_scaling.type, "default");
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_FALSE(c->mlp_bias);
  EXPECT_EQ(c->hidden_act, "silu");
  EXPECT_EQ(c->torch_dtype, DType::kF32);
}

TEST(ModelConfigTest, TinyStoriesTransformers5Layout) {
  if (SharedModels().empty()) GTEST_SKIP() << "no shared models";
  absl::StatusOr<ModelConfig> c = LoadModelConfig(SharedModels() + "/tinystories-llama-3m");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 256);
  EXPECT_EQ(c->intermediate_size, 688);
  EXPECT_EQ(c->num_hidden_layers, 4);
  EXPECT_EQ(c->num_key_value_heads, 4);
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_EQ(c->rope_scaling.type, "default");
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->torch_dtype, DType::kBF16);
}

TEST(ModelConfigTest, Defaults) {
  absl::StatusOr<ModelConfig> c = Parse(BaseLlama());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_key_value_heads, 8);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_EQ(c->max_position_embeddings, 2048);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->torch_dtype, DType::kF32);
  // Explicit nulls mean "absent".
  c = ParseEdited([](json& j) { j["num_key_value_heads"] = nullptr, j["rope_scaling"] = nullptr; });
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_key_value_heads, 8);
}

TEST(ModelConfigTest, Qwen2HasQkvBias) {
  absl::StatusOr<ModelConfig> c = ParseEdited([](json& j) {
    j["model_type"] = "qwen2";
    j["torch_dtype"] = "bfloat16";
    j["use_sliding_window"] = false;
    j["sliding_window"] = 4096;
  });
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->attention_bias);
  EXPECT_FALSE(c->o_proj_bias);
  EXPECT_FALSE(c->mlp_bias);
  EXPECT_EQ(c->sliding_window, 0);
  EXPECT_EQ(c->max_position_embeddings, 32768);
  EXPECT_EQ(c->torch_dtype, DType::kBF16);
}

TEST(ModelConfigTest, MistralSlidingWindow) {
  absl::StatusOr<ModelConfig> c = ParseEdited([](json& j) {
    j["model_type"] = "mistral";
    j["sliding_window"] = 4096;
  });
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sliding_window, 4096);
  EXPECT_FALSE(c->attention_bias);
}

void ExpectLlama3(const absl::StatusOr<ModelConfig>& c) {
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
}

TEST(ModelConfigTest, Llama3RopeInBothLayouts) {
  const json scaling = {{"factor", 8.0},
                        {"low_freq_factor", 1.0},
                        {"high_freq_factor", 4.0},
                        {"original_max_position_embeddings", 8192}};
  ExpectLlama3(ParseEdited([&](json& j) {
    j["rope_theta"] = 500000.0;
    j["rope_scaling"] = scaling;
    j["rope_scaling"]["rope_type"] = "llama3";
  }));
  ExpectLlama3(ParseEdited([&](json& j) {
    j["rope_theta"] = 500000;
    j["rope_scaling"] = scaling;
    j["rope_scaling"]["type"] = "llama3";  // older spelling
  }));
  ExpectLlama3(ParseEdited([&](json& j) {
    j["rope_parameters"] = scaling;
    j["rope_parameters"]["rope_type"] = "llama3";
    j["rope_parameters"]["rope_theta"] = 500000.0;
    j["dtype"] = "bfloat16";
  }));
}

TEST(ModelConfigTest, Opt) {
  const json j = {{"model_type", "opt"},
                  {"architectures", {"OPTForCausalLM"}},
                  {"hidden_size", 768},
                  {"ffn_dim", 3072},
                  {"num_hidden_layers", 12},
                  {"num_attention_heads", 12},
                  {"vocab_size", 50272},
                  {"max_position_embeddings", 2048},
                  {"word_embed_proj_dim", 768},
                  {"do_layer_norm_before", true},
                  {"activation_function", "relu"},
                  {"torch_dtype", "float16"}};
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->intermediate_size, 3072);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->hidden_act, "relu");
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_TRUE(c->enable_bias);
  EXPECT_TRUE(c->attention_bias && c->o_proj_bias && c->mlp_bias);
  EXPECT_EQ(c->word_embed_proj_dim, 768);
  EXPECT_EQ(c->torch_dtype, DType::kF16);
}

TEST(ModelConfigTest, UnknownModelTypeListsSupported) {
  absl::Status s = ParseEdited([](json& j) { j["model_type"] = "gpt2"; }).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  for (const std::string& t : SupportedModelTypes()) {
    EXPECT_NE(s.message().find(t), std::string_view::npos) << t << " not in " << s;
  }
  EXPECT_NE(s.message().find("gpt2"), std::string_view::npos);
  EXPECT_EQ(SupportedModelTypes(), (std::vector<std::string>{"llama", "mistral", "opt", "qwen2"}));
}

TEST(ModelConfigTest, MissingFileIsNotFound) {
  testing::TempDir dir;
  absl::Status s = LoadModelConfig(dir.path()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find(dir.path() + "/config.json"), std::string_view::npos) << s;
}

struct BadConfig {
  const char* label;
  std::function<void(json&)> edit;
  const char* field;  // must appear in the message
};

void PrintTo(const BadConfig& c, std::ostream* os) { *os << c.label; }

class BadConfigTest : public ::testing::TestWithParam<BadConfig> {};

TEST_P(BadConfigTest, InvalidArgumentNamingField) {
  absl::Status s = ParseEdited(GetParam().edit).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find(GetParam().field), std::string_view::npos) << s;
  EXPECT_NE(s.message().find("cfg.json"), std::string_view::npos) << s;
}

INSTANTIATE_TEST_SUITE_P(
    All, BadConfigTest,
    ::testing::Values(
        BadConfig{"zero_hidden", [](json& j) { j["hidden_size"] = 0; }, "hidden_size"},
        BadConfig{"huge_hidden", [](json& j) { j["hidden_size"] = 1 << 21; }, "hidden_size"},
        BadConfig{"many_layers", [](json& j) { j["num_hidden_layers"] = 20000; },
                  "num_hidden_layers"},
        BadConfig{"zero_heads", [](json& j) { j["num_attention_heads"] = 0; },
                  "num_attention_heads"},
        BadConfig{"kv_not_divisor", [](json& j) { j["num_key_value_heads"] = 3; },
                  "num_key_value_heads"},
        BadConfig{"kv_negative", [](json& j) { j["num_key_value_heads"] = -4; },
                  "num_key_value_heads"},
        BadConfig{"hidden_not_divisible", [](json& j) { j["hidden_size"] = 65; }, "hidden_size"},
        BadConfig{"string_size", [](json& j) { j["hidden_size"] = "64"; }, "hidden_size"},
        BadConfig{"float_size", [](json& j) { j["hidden_size"] = 64.5; }, "hidden_size"},
        BadConfig{"huge_uint", [](json& j) { j["vocab_size"] = 18446744073709551615ull; },
                  "vocab_size"},
        BadConfig{"missing_vocab", [](json& j) { j.erase("vocab_size"); }, "vocab_size"},
        BadConfig{"missing_type", [](json& j) { j.erase("model_type"); }, "model_type"},
        BadConfig{"bad_eps", [](json& j) { j["rms_norm_eps"] = -1.0; }, "rms_norm_eps"},
        BadConfig{"bad_theta", [](json& j) { j["rope_theta"] = 0; }, "rope_theta"},
        BadConfig{"bad_dtype", [](json& j) { j["torch_dtype"] = "float64"; }, "torch_dtype"},
        BadConfig{"bad_bool", [](json& j) { j["tie_word_embeddings"] = 1; }, "tie_word_embeddings"},
        BadConfig{"rope_not_object", [](json& j) { j["rope_scaling"] = 2; }, "rope_scaling"},
        BadConfig{"rope_type",
                  [](json& j) {
                    j["rope_scaling"] = {{"rope_type", "weird"}};
                  },
                  "rope_scaling.rope_type"},
        BadConfig{"llama3_freqs",
                  [](json& j) {
                    j["rope_scaling"] = {{"rope_type", "llama3"},
                                         {"factor", 8.0},
                                         {"low_freq_factor", 4.0},
                                         {"high_freq_factor", 1.0},
                                         {"original_max_position_embeddings", 8192}};
                  },
                  "high_freq_factor"},
        BadConfig{"architectures", [](json& j) { j["architectures"] = "Llama"; }, "architectures"}),
    [](const ::testing::TestParamInfo<BadConfig>& info) { return std::string(info.param.label); });

TEST(ModelConfigTest, NotJsonOrNotObject) {
  EXPECT_EQ(ParseModelConfig("{", "c").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseModelConfig("[]", "c").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseModelConfig("", "c").status().code(), absl::StatusCode::kInvalidArgument);
  // head_dim given: hidden_size need not be divisible by the heads.
  absl::StatusOr<ModelConfig> c = ParseEdited([](json& j) {
    j["hidden_size"] = 65;
    j["head_dim"] = 16;
  });
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 16);
}

}  // namespace
}  // namespace dgptq
