#include "common/safetensors_writer.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "common/json_util.h"
#include "common/safetensors.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace dgptq {
namespace {

using ::dgptq::testing::TempDir;

std::set<std::string> ListDir(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.insert(e.path().filename().string());
  }
  return names;
}

// A test tensor whose bytes are a function of its name.
struct Owned {
  DType dtype;
  Shape shape;
  std::vector<uint8_t> bytes;
  TensorView view() const { return TensorView{dtype, shape, bytes.data()}; }
};

Owned Make(DType dtype, Shape shape, uint8_t seed) {
  Owned t{dtype, std::move(shape), {}};
  t.bytes.resize(static_cast<size_t>(NumElements(t.shape)) * DTypeSize(dtype));
  for (size_t i = 0; i < t.bytes.size(); ++i) t.bytes[i] = static_cast<uint8_t>(seed * 31 + i);
  return t;
}

void ExpectSame(const TensorView& got, const Owned& want) {
  EXPECT_EQ(got.dtype, want.dtype);
  EXPECT_EQ(got.shape, want.shape);
  ASSERT_EQ(got.nbytes(), want.bytes.size());
  EXPECT_EQ(std::memcmp(got.data, want.bytes.data(), want.bytes.size()), 0);
}

TEST(SafetensorsWriterTest, RoundTripsEveryDType) {
  TempDir dir;
  const std::string path = dir / "out.safetensors";
  std::map<std::string, Owned> tensors;
  tensors.emplace("f32", Make(DType::kF32, {3, 5}, 1));
  tensors.emplace("f16", Make(DType::kF16, {7}, 2));
  tensors.emplace("bf16", Make(DType::kBF16, {2, 3, 1}, 3));
  tensors.emplace("i8", Make(DType::kI8, {9}, 4));
  tensors.emplace("i32", Make(DType::kI32, {4, 1}, 5));
  tensors.emplace("i64", Make(DType::kI64, {3}, 6));
  tensors.emplace("u8", Make(DType::kU8, {1}, 7));
  tensors.emplace("bool", Make(DType::kBool, {2}, 8));
  tensors.emplace("scalar", Make(DType::kF32, {}, 9));
  tensors.emplace("empty", Make(DType::kF16, {0, 4}, 10));
  {
    auto w = SafetensorsFileWriter::Create(path, {{"format", "pt"}, {"note", "x"}});
    ASSERT_TRUE(w.ok()) << w.status();
    for (const auto& [name, t] : tensors) ASSERT_TRUE((*w)->Add(name, t.view()).ok()) << name;
    EXPECT_FALSE(std::filesystem::exists(path));  // nothing under the final name yet
    ASSERT_TRUE((*w)->Finish().ok());
    EXPECT_EQ((*w)->Add("late", tensors.at("u8").view()).code(),
              absl::StatusCode::kFailedPrecondition);
  }
  EXPECT_EQ(ListDir(dir.path()), std::set<std::string>{"out.safetensors"});
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->header().metadata.at("note"), "x");
  ASSERT_EQ((*f)->header().tensors.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    auto v = (*f)->Get(name);
    ASSERT_TRUE(v.ok()) << v.status();
    ExpectSame(*v, t);
  }
  // Layout: 8-byte length, space-padded header (multiple of 8), contiguous data.
  absl::StatusOr<std::string> raw = ReadFile(path);
  ASSERT_TRUE(raw.ok());
  uint64_t n = 0;
  std::memcpy(&n, raw->data(), 8);
  EXPECT_EQ(n % 8, 0u);
  const nlohmann::json header = nlohmann::json::parse(raw->substr(8, n));
  EXPECT_EQ(header["__metadata__"]["format"], "pt");
  uint64_t end = 0;
  for (const TensorInfo& t : (*f)->header().tensors) {
    EXPECT_EQ(t.begin, end) << t.name;
    end = t.end;
  }
  EXPECT_EQ(raw->size(), 8 + n + end);
}

TEST(SafetensorsWriterTest, RejectsBadInput) {
  TempDir dir;
  auto w = SafetensorsFileWriter::Create(dir / "x.safetensors");
  ASSERT_TRUE(w.ok());
  const Owned t = Make(DType::kF32, {2}, 1);
  ASSERT_TRUE((*w)->Add("a", t.view()).ok());
  EXPECT_EQ((*w)->Add("a", t.view()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*w)->Add("__metadata__", t.view()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*w)->Add("", t.view()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*w)->Add("bad\xff", t.view()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*w)->Add("neg", TensorView{DType::kF32, {-1}, nullptr}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*w)->Add("null", TensorView{DType::kF32, {4}, nullptr}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*w)->data_bytes(), 8u);
  EXPECT_EQ(SafetensorsFileWriter::Create(dir / "no/such/dir.safetensors").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(SafetensorsWriterTest, AbandonedWritersLeaveNothing) {
  TempDir dir;
  const Owned t = Make(DType::kBF16, {64}, 3);
  {
    auto w = SafetensorsFileWriter::Create(dir / "x.safetensors");
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Add("a", t.view()).ok());
    EXPECT_FALSE(ListDir(dir.path()).empty());  // the temporary exists while writing
  }
  EXPECT_TRUE(ListDir(dir.path()).empty());
  {
    auto w = ShardedWriter::Create(dir.path(), 100);
    ASSERT_TRUE(w.ok());
    for (int i = 0; i < 5; ++i) ASSERT_TRUE((*w)->Add("t" + std::to_string(i), t.view()).ok());
  }
  EXPECT_TRUE(ListDir(dir.path()).empty());
}

TEST(ShardedWriterTest, RollsShardsAndWritesIndex) {
  TempDir dir;
  std::vector<std::pair<std::string, Owned>> tensors = {
      {"t0", Make(DType::kF32, {10}, 0)},   // 40 bytes
      {"t1", Make(DType::kF32, {10}, 1)},   // 80: still fits the 100-byte cap
      {"t2", Make(DType::kF16, {20}, 2)},   // 120 > 100: new shard
      {"big", Make(DType::kI64, {25}, 3)},  // 200 > cap: a shard of its own
      {"t3", Make(DType::kU8, {8}, 4)},     // after the big one: new shard
      {"t4", Make(DType::kBF16, {0}, 5)}};  // empty tensor joins the last shard
  auto w = ShardedWriter::Create(dir.path(), 100);
  ASSERT_TRUE(w.ok()) << w.status();
  for (const auto& [name, t] : tensors) ASSERT_TRUE((*w)->Add(name, t.view()).ok()) << name;
  EXPECT_EQ((*w)->Add("t0", tensors[0].second.view()).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE((*w)->Finish().ok());
  EXPECT_EQ(
      ListDir(dir.path()),
      (std::set<std::string>{"model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors",
                             "model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors",
                             "model.safetensors.index.json"}));
  auto text = ReadFile(dir / "model.safetensors.index.json");
  ASSERT_TRUE(text.ok());
  const nlohmann::json index = nlohmann::json::parse(*text);
  EXPECT_EQ(index["metadata"]["total_size"], 40 + 40 + 40 + 200 + 8);
  const nlohmann::json want = {
      {"t0", "model-00001-of-00004.safetensors"}, {"t1", "model-00001-of-00004.safetensors"},
      {"t2", "model-00002-of-00004.safetensors"}, {"big", "model-00003-of-00004.safetensors"},
      {"t3", "model-00004-of-00004.safetensors"}, {"t4", "model-00004-of-00004.safetensors"}};
  EXPECT_EQ(index["weight_map"], want);
  auto shard = SafetensorsFile::Open(dir / "model-00002-of-00004.safetensors");
  ASSERT_TRUE(shard.ok());
  EXPECT_EQ(shard->get()->header().metadata.at("format"), "pt");
  auto ckpt = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  for (const auto& [name, t] : tensors) {
    auto v = (*ckpt)->Get(name);
    ASSERT_TRUE(v.ok()) << v.status();
    ExpectSame(*v, t);
  }
}

TEST(ShardedWriterTest, OneShardIsModelSafetensors) {
  TempDir dir;
  std::ofstream(dir / "model.safetensors.index.json") << "{}";  // stale, from an earlier run
  const Owned t = Make(DType::kF32, {4, 4}, 9);
  auto w = ShardedWriter::Create(dir.path(), 1 << 20);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Add("w", t.view()).ok());
  ASSERT_TRUE((*w)->Finish().ok());
  EXPECT_EQ((*w)->Finish().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ListDir(dir.path()), std::set<std::string>{"model.safetensors"});
  auto ckpt = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  ExpectSame(*(*ckpt)->Get("w"), t);
  EXPECT_EQ(ShardedWriter::Create(dir.path(), 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ShardedWriter::Create(dir / "missing", 10).status().code(),
            absl::StatusCode::kNotFound);
}

// Two writers fill one directory with named parts; an abandoned writer's named parts stay
// (a resumed run keeps them); Finish publishes every part in name order.
TEST(ShardedWriterTest, NamedPartsOfSeveralWritersArePublishedInOrder) {
  TempDir dir;
  const Owned a = Make(DType::kF32, {4}, 1), b = Make(DType::kF16, {6}, 2), c = Make(DType::kI32, {3}, 3);
  {
    auto w1 = ShardedWriter::Create(dir.path(), 1 << 20);
    ASSERT_TRUE(w1.ok());
    ASSERT_TRUE((*w1)->BeginPart("layer-1").ok());
    ASSERT_TRUE((*w1)->Add("b", b.view()).ok());
    ASSERT_TRUE((*w1)->EndPart().ok());
    ASSERT_TRUE((*w1)->BeginPart("layer-2").ok());  // empty: no file
    ASSERT_TRUE((*w1)->EndPart().ok());
    EXPECT_EQ((*w1)->BeginPart("layer-1").code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ((*w1)->BeginPart("../x").code(), absl::StatusCode::kInvalidArgument);
  }  // abandoned
  auto parts = ListParts(dir.path());
  ASSERT_TRUE(parts.ok()) << parts.status();
  EXPECT_EQ(*parts, (std::map<std::string, std::vector<std::string>>{{"layer-1", {"b"}}}));
  ASSERT_TRUE(WritePartsIndex(dir.path()).ok());
  auto partial = Checkpoint::Open(dir.path());  // readable before publishing
  ASSERT_TRUE(partial.ok()) << partial.status();
  ExpectSame(*(*partial)->Get("b"), b);

  auto w2 = ShardedWriter::Create(dir.path(), 1 << 20);
  ASSERT_TRUE(w2.ok());
  ASSERT_TRUE((*w2)->BeginPart("layer-0").ok());
  ASSERT_TRUE((*w2)->Add("a", a.view()).ok());
  ASSERT_TRUE((*w2)->BeginPart("stale").ok());
  ASSERT_TRUE((*w2)->Add("s", c.view()).ok());
  ASSERT_TRUE((*w2)->EndPart().ok());
  ASSERT_TRUE(RemoveParts(dir.path(), {"stale", "missing"}).ok());
  ASSERT_TRUE((*w2)->BeginPart("z-last").ok());
  ASSERT_TRUE((*w2)->Add("c", c.view()).ok());
  ASSERT_TRUE((*w2)->Finish().ok());
  EXPECT_EQ(ListDir(dir.path()),
            (std::set<std::string>{"model-00001-of-00003.safetensors",
                                   "model-00002-of-00003.safetensors",
                                   "model-00003-of-00003.safetensors",
                                   "model.safetensors.index.json"}));
  const nlohmann::json index = nlohmann::json::parse(*ReadFile(dir / "model.safetensors.index.json"));
  const nlohmann::json want = {{"a", "model-00001-of-00003.safetensors"},
                               {"b", "model-00002-of-00003.safetensors"},
                               {"c", "model-00003-of-00003.safetensors"}};
  EXPECT_EQ(index["weight_map"], want);
  auto ckpt = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  ExpectSame(*(*ckpt)->Get("a"), a);
  ExpectSame(*(*ckpt)->Get("c"), c);
}

TEST(ShardedWriterTest, TensorInTwoPartsIsRefused) {
  TempDir dir;
  const Owned a = Make(DType::kF32, {4}, 1);
  for (const char* part : {"p1", "p2"}) {
    auto w = ShardedWriter::Create(dir.path(), 1 << 20);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->BeginPart(part).ok());
    ASSERT_TRUE((*w)->Add("a", a.view()).ok());
    ASSERT_TRUE((*w)->EndPart().ok());
  }
  const absl::Status st = WritePartsIndex(dir.path());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("p1 and p2"), std::string::npos) << st;
}

TEST(JsonUtilTest, ReadAndAtomicWrite) {
  TempDir dir;
  const std::string path = dir / "f.json";
  absl::Status missing = ReadFile(path).status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.message().find(path), std::string_view::npos);
  ASSERT_TRUE(WriteFileAtomic(path, "one").ok());
  ASSERT_TRUE(WriteFileAtomic(path, "two").ok());
  EXPECT_EQ(*ReadFile(path), "two");
  EXPECT_EQ(ListDir(dir.path()), std::set<std::string>{"f.json"});
  EXPECT_EQ(ReadFile(dir.path()).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dgptq
