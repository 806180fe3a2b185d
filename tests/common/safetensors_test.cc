#include "common/safetensors.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/model_config.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace dgptq {
namespace {

using ::dgptq::testing::TempDir;

// Writes `length` as the 8-byte header length, then `header`, then `data_bytes` bytes.
void WriteRaw(const std::string& path, uint64_t length, const std::string& header,
              size_t data_bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(&length), 8);
  out << header << std::string(data_bytes, '\x01');
}

void WriteFile(const std::string& path, const std::string& header, size_t data_bytes) {
  WriteRaw(path, header.size(), header, data_bytes);
}

void ExpectInvalid(const absl::Status& s, const std::vector<std::string>& needles) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  for (const std::string& n : needles) {
    EXPECT_NE(s.message().find(n), std::string_view::npos) << "'" << n << "' not in: " << s;
  }
}

TEST(SafetensorsTest, OpensHandWrittenFile) {
  TempDir dir;
  const std::string path = dir / "a.safetensors";
  const float values[] = {1.5f, -2.0f, 0.25f};
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[3],"data_offsets":[4,16]},)"
      R"("z":{"dtype":"I8","shape":[0],"data_offsets":[0,0]},)"
      R"("b":{"dtype":"U8","shape":[2,2],"data_offsets":[0,4]}})";
  {
    std::ofstream out(path, std::ios::binary);
    const uint64_t n = header.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << header << "abcd";
    out.write(reinterpret_cast<const char*>(values), sizeof(values));
  }
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  const SafetensorsHeader& h = (*f)->header();
  ASSERT_EQ(h.tensors.size(), 3u);
  EXPECT_EQ(h.tensors[2].name, "w");  // sorted by begin offset
  EXPECT_EQ(h.metadata.at("format"), "pt");
  absl::StatusOr<TensorView> w = (*f)->Get("w");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->shape, (Shape{3}));
  EXPECT_EQ(std::memcmp(w->data, values, sizeof(values)), 0);
  EXPECT_EQ(std::memcmp((*f)->Get("b")->data, "abcd", 4), 0);
  EXPECT_TRUE((*f)->Has("z"));
  EXPECT_EQ((*f)->Get("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(SafetensorsFile::Open(dir / "missing").status().code(), absl::StatusCode::kNotFound);
}

struct BadHeader {
  const char* label;
  std::string header;
  size_t data_bytes;
  std::vector<std::string> needles;  // besides the file name
};

void PrintTo(const BadHeader& c, std::ostream* os) { *os << c.label; }

class BadHeaderTest : public ::testing::TestWithParam<BadHeader> {};

TEST_P(BadHeaderTest, RejectedWithContext) {
  const BadHeader& c = GetParam();
  ExpectInvalid(ParseSafetensorsHeader(c.header, c.data_bytes, "x.safetensors").status(), [&] {
    std::vector<std::string> n = c.needles;
    n.push_back("x.safetensors");
    return n;
  }());
  TempDir dir;
  const std::string path = dir / "bad.safetensors";
  WriteFile(path, c.header, c.data_bytes);
  std::vector<std::string> needles = c.needles;
  needles.push_back(path);
  ExpectInvalid(SafetensorsFile::Open(path).status(), needles);
}

std::string Entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return "\"" + name + R"(":{"dtype":")" + dtype + R"(","shape":)" + shape + R"(,"data_offsets":)" +
         offsets + "}";
}

INSTANTIATE_TEST_SUITE_P(
    All, BadHeaderTest,
    ::testing::Values(
        BadHeader{"not_json", "{not json", 0, {"not valid JSON"}},
        BadHeader{"not_object", "[1, 2]", 0, {"not a JSON object"}},
        BadHeader{"overlap",
                  "{" + Entry("a", "F32", "[2]", "[0,8]") + "," +
                      Entry("b", "F32", "[2]", "[4,12]") + "}",
                  12,
                  {"'b'", "overlap", "'a'"}},
        BadHeader{"past_end",
                  "{" + Entry("t", "F32", "[4]", "[0,16]") + "}",
                  8,
                  {"'t'", "past the data section"}},
        BadHeader{
            "unknown_dtype", "{" + Entry("t", "F64", "[1]", "[0,8]") + "}", 8, {"'t'", "F64"}},
        BadHeader{"shape_mismatch",
                  "{" + Entry("t", "F32", "[3]", "[0,8]") + "}",
                  8,
                  {"'t'", "[3]", "12 bytes"}},
        BadHeader{"begin_after_end",
                  "{" + Entry("t", "U8", "[1]", "[8,4]") + "}",
                  8,
                  {"'t'", "begin > end"}},
        BadHeader{
            "negative_dim", "{" + Entry("t", "U8", "[-1]", "[0,0]") + "}", 0, {"'t'", "shape"}},
        BadHeader{"overflow",
                  "{" + Entry("t", "F32", "[4294967296,4294967296]", "[0,8]") + "}",
                  8,
                  {"'t'", "overflows"}},
        BadHeader{"float_dim", "{" + Entry("t", "U8", "[1.5]", "[0,1]") + "}", 1, {"'t'"}},
        BadHeader{
            "missing_dtype", R"({"t":{"shape":[1],"data_offsets":[0,1]}})", 1, {"'t'", "dtype"}},
        BadHeader{"bad_offsets",
                  R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0]}})",
                  1,
                  {"'t'", "data_offsets"}},
        BadHeader{"entry_not_object", R"({"t":[1]})", 0, {"'t'", "not a JSON object"}},
        BadHeader{"metadata_value", R"({"__metadata__":{"k":1}})", 0, {"__metadata__", "'k'"}},
        BadHeader{"metadata_array", R"({"__metadata__":[]})", 0, {"__metadata__"}}),
    [](const ::testing::TestParamInfo<BadHeader>& info) { return std::string(info.param.label); });

TEST(SafetensorsTest, RejectsBadLengths) {
  TempDir dir;
  const std::string tiny = dir / "tiny.safetensors";
  std::ofstream(tiny, std::ios::binary) << "abc";
  ExpectInvalid(SafetensorsFile::Open(tiny).status(), {tiny, "shorter than the 8-byte"});
  const std::string empty = dir / "empty.safetensors";
  std::ofstream(empty, std::ios::binary).flush();
  ExpectInvalid(SafetensorsFile::Open(empty).status(), {empty});
  const std::string truncated = dir / "truncated.safetensors";
  WriteRaw(truncated, 1000, "{}", 0);
  ExpectInvalid(SafetensorsFile::Open(truncated).status(), {truncated, "truncated"});
  const std::string huge = dir / "huge.safetensors";
  WriteRaw(huge, kMaxHeaderBytes + 1, "{}", 0);
  ExpectInvalid(SafetensorsFile::Open(huge).status(), {huge, "exceeds the limit"});
  ExpectInvalid(SafetensorsFile::Open(dir.path()).status(), {dir.path(), "regular file"});
}

void WriteIndex(const TempDir& dir, const std::string& weight_map) {
  std::ofstream(dir / "model.safetensors.index.json")
      << R"({"metadata":{"total_size":8},"weight_map":)" << weight_map << "}";
}

TEST(CheckpointTest, IndexErrors) {
  TempDir dir;
  WriteFile(dir / "s1.safetensors", "{" + Entry("a", "F32", "[2]", "[0,8]") + "}", 8);
  const std::string index = dir / "model.safetensors.index.json";
  WriteIndex(dir, R"({"a":"s1.safetensors","b":"../s1.safetensors"})");
  ExpectInvalid(Checkpoint::Open(dir.path()).status(), {index, "'b'", "../s1.safetensors"});
  WriteIndex(dir, R"({"a":"sub/s1.safetensors"})");
  ExpectInvalid(Checkpoint::Open(dir.path()).status(), {index, "'a'", "plain file name"});
  WriteIndex(dir, R"({"a":"s1.safetensors","b":"s2.safetensors"})");
  ExpectInvalid(Checkpoint::Open(dir.path()).status(), {index, "'b'", "s2.safetensors"});
  WriteIndex(dir, R"({"a":"s1.safetensors","c":"s1.safetensors"})");
  ExpectInvalid(Checkpoint::Open(dir.path()).status(), {index, "'c'", "s1.safetensors"});
  WriteIndex(dir, R"({"a":1})");
  ExpectInvalid(Checkpoint::Open(dir.path()).status(), {index, "'a'"});
  WriteIndex(dir, R"([])");
  ExpectInvalid(Checkpoint::Open(dir.path()).status(), {index, "weight_map"});
  WriteIndex(dir, R"({"a":"s1.safetensors"})");
  absl::StatusOr<std::unique_ptr<Checkpoint>> ok = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->TensorNames(), std::vector<std::string>{"a"});
  EXPECT_EQ((*ok)->Info("a")->shape, (Shape{2}));
  EXPECT_EQ((*ok)->Get("zz").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*ok)->Info("zz").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE((*ok)->Get("a").ok());
}

TEST(CheckpointTest, EmptyDirectoryIsNotFound) {
  TempDir dir;
  absl::Status s = Checkpoint::Open(dir.path()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_NE(s.message().find(dir.path()), std::string_view::npos);
}

struct SharedModel {
  const char* dir;
  size_t tensors;
  bool lm_head;
};

void PrintTo(const SharedModel& m, std::ostream* os) { *os << m.dir; }

class SharedModelTest : public ::testing::TestWithParam<SharedModel> {};

TEST_P(SharedModelTest, ReadsRealCheckpoint) {
  const std::string shared = std::string(DGPTQ_SOURCE_DIR) + "/../shared";
  if (!std::filesystem::exists(shared + "/models")) GTEST_SKIP() << "no " << shared;
  const std::string dir = shared + "/models/" + GetParam().dir;
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  Checkpoint& c = **ckpt;
  EXPECT_EQ(c.TensorNames().size(), GetParam().tensors);
  EXPECT_EQ(c.Has("lm_head.weight"), GetParam().lm_head);
  absl::StatusOr<TensorView> embed = c.Get("model.embed_tokens.weight");
  ASSERT_TRUE(embed.ok()) << embed.status();
  EXPECT_EQ(embed->dtype, config->torch_dtype);
  EXPECT_EQ(embed->shape, (Shape{config->vocab_size, config->hidden_size}));
  for (int layer = 0; layer < config->num_hidden_layers; ++layer) {
    const std::string p = "model.layers." + std::to_string(layer);
    absl::StatusOr<TensorInfo> k = c.Info(p + ".self_attn.k_proj.weight");
    ASSERT_TRUE(k.ok()) << k.status();
    EXPECT_EQ(k->shape,
              (Shape{config->num_key_value_heads * config->head_dim, config->hidden_size}));
    absl::StatusOr<TensorView> norm = c.Get(p + ".input_layernorm.weight");
    ASSERT_TRUE(norm.ok()) << norm.status();
    const Tensor f = Tensor::ToF32(*norm);
    for (int64_t i = 0; i < f.numel(); ++i) ASSERT_TRUE(std::isfinite(f.as<float>()[i]));
  }
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> logits =
      SafetensorsFile::Open(dir + "/reference_logits.safetensors");
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_EQ((*logits)->Find("input_ids")->dtype, DType::kI32);
  EXPECT_EQ((*logits)->Find("logits")->shape, (Shape{2, 64, config->vocab_size}));
}

INSTANTIATE_TEST_SUITE_P(Shared, SharedModelTest,
                         ::testing::Values(SharedModel{"stories260k-llama", 47, false},
                                           SharedModel{"tinystories-llama-3m", 39, true}),
                         [](const ::testing::TestParamInfo<SharedModel>& info) {
                           return info.index == 0 ? "stories260k" : "tinystories3m";
                         });

}  // namespace
}  // namespace dgptq
