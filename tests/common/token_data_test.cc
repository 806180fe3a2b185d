// Token files and windows: the shared TinyStories token files, every file format, the
// .npy parser's errors, and the documented calibration draw.
#include "common/token_data.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "common/json_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace dgptq {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int64_t kHeldOut = 235807;  // int(0.6 * 393012): the README's split

std::string SharedDir() {
  const std::string dir = std::string(DGPTQ_SOURCE_DIR) + "/../shared";
  return std::filesystem::is_directory(dir) ? dir : std::string();
}

std::string TempPath(const std::string& name) {
  return (std::filesystem::path(::testing::TempDir()) / ("token_data_" + name)).string();
}

std::string WriteTemp(const std::string& name, const std::string& bytes) {
  const std::string path = TempPath(name);
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

template <typename T>
std::string Raw(const std::vector<T>& v) {
  std::string s(v.size() * sizeof(T), '\0');
  if (!v.empty()) std::memcpy(s.data(), v.data(), s.size());
  return s;
}

// A .npy file: `dict` padded to a 64-byte boundary and ended by '\n', as numpy does.
std::string Npy(const std::string& dict, const std::string& data, int major = 1) {
  const size_t len_bytes = major == 1 ? 2 : 4;
  std::string header = dict;
  while ((8 + len_bytes + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = std::string("\x93NUMPY") + static_cast<char>(major) + '\0';
  for (size_t i = 0; i < len_bytes; ++i)
    out += static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  return out + header + data;
}

std::string NpyI32(const std::vector<int32_t>& v, const std::string& shape) {
  return Npy("{'descr': '<i4', 'fortran_order': False, 'shape': " + shape + ", }", Raw(v));
}

struct StTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::string data;
};

std::string Safetensors(const std::vector<StTensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const StTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {data.size(), data.size() + t.data.size()}}};
    data += t.data;
  }
  const std::string h = header.dump();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((h.size() >> (8 * i)) & 0xFF);
  return out + h + data;
}

class FakeTokenizer : public Tokenizer {
 public:
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    for (const char c : text) ids.push_back(static_cast<uint8_t>(c) % 10);
    return ids;
  }
  std::string Decode(const std::vector<int32_t>&) const override { return {}; }
  int64_t vocab_size() const override { return 10; }
  int32_t bos_id() const override { return -1; }
  int32_t eos_id() const override { return -1; }
};

TEST(TokenDataSharedTest, TinyStoriesWindowsMatchTheReferenceFiles) {
  const std::string shared = SharedDir();
  if (shared.empty()) GTEST_SKIP() << "no ../shared";
  const std::string dir = shared + "/data/tinystories/";
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
      LoadTokenizer(shared + "/models/tinystories-llama-3m");
  ASSERT_TRUE(tok.ok()) << tok.status();
  absl::StatusOr<std::vector<int32_t>> all = LoadTokenStream(dir + "tokens_all.npy", tok->get());
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 393012u);
  absl::StatusOr<std::vector<int32_t>> from_text =
      LoadTokenStream(dir + "tinystories_val.txt", tok->get());
  ASSERT_TRUE(from_text.ok()) << from_text.status();
  EXPECT_TRUE(*from_text == *all);

  absl::StatusOr<TokenWindows> calib = LoadTokenWindows(dir + "calib_128x256.npy", nullptr, 256);
  ASSERT_TRUE(calib.ok()) << calib.status();
  EXPECT_EQ(calib->count, 128);
  EXPECT_EQ(calib->seq_len, 256);
  absl::StatusOr<TokenWindows> eval =
      LoadTokenWindows(dir + "eval_windows_256.npy", tok->get(), 256);
  ASSERT_TRUE(eval.ok()) << eval.status();
  EXPECT_EQ(eval->count, 614);
  EXPECT_EQ(eval->seq_len, 256);

  const std::vector<int32_t> train(all->begin(), all->begin() + kHeldOut);
  const std::vector<int32_t> held_out(all->begin() + kHeldOut, all->end());
  absl::StatusOr<TokenWindows> eval_cut = EvalWindows(held_out, 256, 0);
  ASSERT_TRUE(eval_cut.ok()) << eval_cut.status();
  EXPECT_EQ(eval_cut->count, 614);
  EXPECT_TRUE(eval_cut->ids == eval->ids);
  absl::StatusOr<TokenWindows> calib_cut = EvalWindows(train, 256, 128);
  ASSERT_TRUE(calib_cut.ok()) << calib_cut.status();
  EXPECT_TRUE(calib_cut->ids == calib->ids);

  // Rows are truncated to a shorter seq_len, and too short for a longer one.
  absl::StatusOr<TokenWindows> short_rows =
      LoadTokenWindows(dir + "calib_128x256.npy", nullptr, 100);
  ASSERT_TRUE(short_rows.ok()) << short_rows.status();
  EXPECT_EQ(short_rows->count, 128);
  EXPECT_TRUE(std::equal(short_rows->row(5), short_rows->row(5) + 100, calib->row(5)));
  absl::StatusOr<TokenWindows> too_long = LoadTokenWindows(dir + "calib_128x256.npy", nullptr, 300);
  ASSERT_TRUE(absl::IsInvalidArgument(too_long.status())) << too_long.status();
  EXPECT_THAT(std::string(too_long.status().message()), HasSubstr("calib_128x256.npy"));
  EXPECT_THAT(std::string(too_long.status().message()), HasSubstr("256"));

  // The reference logits' input_ids: the first 64 tokens of the first two eval windows.
  absl::StatusOr<TokenWindows> ref = LoadTokenWindows(
      shared + "/models/tinystories-llama-3m/reference_logits.safetensors", tok->get(), 64);
  ASSERT_TRUE(ref.ok()) << ref.status();
  ASSERT_EQ(ref->count, 2);
  EXPECT_TRUE(std::equal(ref->row(0), ref->row(0) + 64, eval->row(0)));
  EXPECT_TRUE(std::equal(ref->row(1), ref->row(1) + 64, eval->row(1)));
}

TEST(TokenDataTest, JsonlRowsAndStreams) {
  const std::string rows =
      WriteTemp("rows.jsonl", "[1, 2, 3, 4]\n[5, 6, 7, 8]\r\n\n[9, 0, 1, 2]\n");
  absl::StatusOr<TokenWindows> w = LoadTokenWindows(rows, nullptr, 3);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->count, 3);
  EXPECT_THAT(w->ids, ElementsAre(1, 2, 3, 5, 6, 7, 9, 0, 1));
  absl::StatusOr<std::vector<int32_t>> flat = LoadTokenStream(rows, nullptr);
  ASSERT_TRUE(flat.ok());
  EXPECT_EQ(flat->size(), 12u);

  const std::string ragged = WriteTemp("ragged.jsonl", "[1, 2, 3]\n[4, 5]\n[6, 7, 8, 9]");
  w = LoadTokenWindows(ragged, nullptr, 4);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->count, 2);
  EXPECT_THAT(w->ids, ElementsAre(1, 2, 3, 4, 5, 6, 7, 8));

  const struct {
    const char* text;
    const char* where;
  } bad[] = {{"[1, 2]\n[3, oops]\n", ":2"},
             {"[1, 2]\n{\"a\": 1}\n", ":2"},
             {"[1, 2.5]\n", ":1"},
             {"[1, -2]\n", ":1"},
             {"[1, 2]\n\n[3, 4294967296]\n", ":3"}};
  for (const auto& b : bad) {
    const std::string path = WriteTemp("bad.jsonl", b.text);
    absl::StatusOr<std::vector<int32_t>> ids = LoadTokenStream(path, nullptr);
    ASSERT_TRUE(absl::IsInvalidArgument(ids.status())) << b.text << ids.status();
    EXPECT_THAT(std::string(ids.status().message()), HasSubstr(path + b.where)) << b.text;
  }
}

TEST(TokenDataTest, SafetensorsInputIdsOrTheOnlyIntegerTensor) {
  const std::string named = WriteTemp(
      "named.safetensors",
      Safetensors({{"logits", "F32", {2}, Raw(std::vector<float>{1, 2})},
                   {"input_ids", "I32", {2, 3}, Raw(std::vector<int32_t>{1, 2, 3, 4, 5, 6})}}));
  absl::StatusOr<TokenWindows> w = LoadTokenWindows(named, nullptr, 2);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_THAT(w->ids, ElementsAre(1, 2, 4, 5));

  const std::string only =
      WriteTemp("only.safetensors",
                Safetensors({{"tokens", "I64", {5}, Raw(std::vector<int64_t>{9, 8, 7, 6, 5})}}));
  absl::StatusOr<std::vector<int32_t>> ids = LoadTokenStream(only, nullptr);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, ElementsAre(9, 8, 7, 6, 5));

  const std::string two =
      WriteTemp("two.safetensors", Safetensors({{"a", "I32", {1}, Raw(std::vector<int32_t>{1})},
                                                {"b", "I32", {1}, Raw(std::vector<int32_t>{2})}}));
  ids = LoadTokenStream(two, nullptr);
  ASSERT_TRUE(absl::IsInvalidArgument(ids.status())) << ids.status();
  EXPECT_THAT(std::string(ids.status().message()), HasSubstr(two));
  const std::string floats =
      WriteTemp("floats.safetensors", Safetensors({{"x", "F32", {1}, Raw(std::vector<float>{1})}}));
  EXPECT_TRUE(absl::IsInvalidArgument(LoadTokenStream(floats, nullptr).status()));
}

TEST(TokenDataTest, TextNeedsATokenizerAndIdsMustFitItsVocabulary) {
  const FakeTokenizer tok;
  const std::string txt = WriteTemp("t.txt", "abc");
  absl::StatusOr<std::vector<int32_t>> ids = LoadTokenStream(txt, &tok);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, ElementsAre(7, 8, 9));
  ids = LoadTokenStream(txt, nullptr);
  ASSERT_TRUE(absl::IsInvalidArgument(ids.status())) << ids.status();
  EXPECT_THAT(std::string(ids.status().message()), HasSubstr(txt));

  const std::string big = WriteTemp("big.npy", NpyI32({1, 2, 10}, "(3,)"));
  EXPECT_TRUE(LoadTokenStream(big, nullptr).ok());
  ids = LoadTokenStream(big, &tok);
  ASSERT_TRUE(absl::IsInvalidArgument(ids.status())) << ids.status();
  EXPECT_THAT(std::string(ids.status().message()), HasSubstr("id 10 at index 2"));
  const std::string negative = WriteTemp("neg.npy", NpyI32({1, -1}, "(2,)"));
  EXPECT_TRUE(absl::IsInvalidArgument(LoadTokenStream(negative, nullptr).status()));

  EXPECT_TRUE(absl::IsInvalidArgument(LoadTokenStream(WriteTemp("x.bin", "1"), &tok).status()));
  EXPECT_TRUE(absl::IsNotFound(LoadTokenStream(TempPath("missing.npy"), &tok).status()));
}

TEST(NpyTest, ParsesVersionsAndDtypes) {
  absl::StatusOr<IdArray> a = ParseNpy(NpyI32({1, 2, 3, 4, 5, 6}, "(2, 3)"), "x.npy");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(a->shape, ElementsAre(2, 3));
  EXPECT_THAT(a->ids, ElementsAre(1, 2, 3, 4, 5, 6));
  a = ParseNpy(Npy("{\"shape\": (3,), \"fortran_order\": False, \"descr\": \"<i8\"}",
                   Raw(std::vector<int64_t>{7, 0, 2147483647}), 2),
               "x.npy");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(a->ids, ElementsAre(7, 0, 2147483647));
  a = ParseNpy(Npy("{'descr': '<i4', 'fortran_order': False, 'shape': (0, 4)}", "", 3), "x.npy");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->ids.empty());
}

TEST(NpyTest, MalformedFilesAreInvalidArgumentNamingTheFile) {
  const std::string ok_dict = "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }";
  const std::string two = Raw(std::vector<int32_t>{1, 2});
  std::string bad_magic = Npy(ok_dict, two);
  bad_magic[1] = 'X';
  std::string bad_version = Npy(ok_dict, two);
  bad_version[6] = 4;
  const struct {
    const char* name;
    std::string bytes;
    const char* message;
  } cases[] = {
      {"magic", bad_magic, "bad magic"},
      {"empty", "", "bad magic"},
      {"version", bad_version, "version 4"},
      {"fortran", Npy("{'descr': '<i4', 'fortran_order': True, 'shape': (2,), }", two), "Fortran"},
      {"float", Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", two), "'<f4'"},
      {"big_endian", Npy("{'descr': '>i4', 'fortran_order': False, 'shape': (2,), }", two),
       "'>i4'"},
      {"truncated", Npy(ok_dict, two.substr(0, 7)), "data section is 7 bytes"},
      {"extra", Npy(ok_dict, two + "x"), "data section is 9 bytes"},
      {"short_header", Npy(ok_dict, two).substr(0, 30), "truncated .npy header"},
      {"3d", Npy("{'descr': '<i4', 'fortran_order': False, 'shape': (1, 1, 2), }", two), "3 dims"},
      {"scalar", Npy("{'descr': '<i4', 'fortran_order': False, 'shape': (), }", two), "0 dims"},
      {"missing", Npy("{'descr': '<i4', 'shape': (2,), }", two), "missing"},
      {"duplicate",
       Npy("{'descr': '<i4', 'descr': '<i4', 'fortran_order': False, 'shape': (2,)}", two),
       "duplicate"},
      {"unknown_key", Npy("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), 'x': 1}", two),
       "unexpected key"},
      {"unclosed", Npy("{'descr': '<i4', 'fortran_order': False, 'shape': (2,),", two), "header"},
      {"huge_shape",
       Npy("{'descr': '<i4', 'fortran_order': False, 'shape': (99999999999, 99999999999)}", two),
       "need more"},
      {"int64_overflow",
       Npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1,)}",
           Raw(std::vector<int64_t>{int64_t{1} << 40})),
       "does not fit in int32"},
  };
  for (const auto& c : cases) {
    absl::StatusOr<IdArray> a = ParseNpy(c.bytes, "/data/ids.npy");
    ASSERT_TRUE(absl::IsInvalidArgument(a.status())) << c.name << ": " << a.status();
    EXPECT_THAT(std::string(a.status().message()), HasSubstr("/data/ids.npy")) << c.name;
    EXPECT_THAT(std::string(a.status().message()), HasSubstr(c.message)) << c.name;
  }
  const std::string path = WriteTemp("fortran.npy", cases[3].bytes);
  absl::StatusOr<std::vector<int32_t>> ids = LoadTokenStream(path, nullptr);
  ASSERT_TRUE(absl::IsInvalidArgument(ids.status())) << ids.status();
  EXPECT_THAT(std::string(ids.status().message()), HasSubstr(path));
}

std::vector<int32_t> Iota(int n) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

TEST(DrawCalibrationTest, DeterministicDocumentedAndInsideTheStream) {
  const std::vector<int32_t> stream = Iota(1000);
  absl::StatusOr<TokenWindows> a = DrawCalibration(stream, 64, 10, 1234);
  absl::StatusOr<TokenWindows> b = DrawCalibration(stream, 64, 10, 1234);
  absl::StatusOr<TokenWindows> c = DrawCalibration(stream, 64, 10, 1235);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->count, 64);
  EXPECT_EQ(a->seq_len, 10);
  EXPECT_TRUE(a->ids == b->ids);
  EXPECT_FALSE(a->ids == c->ids);
  for (int64_t i = 0; i < a->count; ++i) {
    const int32_t start = a->row(i)[0];
    EXPECT_LE(start, 990);
    for (int k = 0; k < 10; ++k) EXPECT_EQ(a->row(i)[k], start + k);  // a real slice
  }
  // Starts from the rule in the header, computed independently (splitmix64 in Python).
  for (const auto& [seed, starts] : std::vector<std::pair<uint64_t, std::vector<int32_t>>>{
           {0, {279, 988, 35, 445, 169}}, {1234, {461, 840, 986, 612, 355}}}) {
    absl::StatusOr<TokenWindows> w = DrawCalibration(stream, 5, 10, seed);
    ASSERT_TRUE(w.ok());
    for (int i = 0; i < 5; ++i) EXPECT_EQ(w->row(i)[0], starts[i]) << seed << " " << i;
  }
  absl::StatusOr<TokenWindows> exact = DrawCalibration(Iota(10), 3, 10, 7);
  ASSERT_TRUE(exact.ok());
  EXPECT_THAT(exact->ids, ElementsAre(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0,
                                      1, 2, 3, 4, 5, 6, 7, 8, 9));
}

TEST(DrawCalibrationTest, Errors) {
  const std::vector<int32_t> stream = Iota(100);
  absl::StatusOr<TokenWindows> w = DrawCalibration(stream, 4, 128, 0);
  ASSERT_TRUE(absl::IsInvalidArgument(w.status()));
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("100"));
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("128"));
  EXPECT_TRUE(absl::IsInvalidArgument(DrawCalibration(stream, 0, 10, 0).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(DrawCalibration(stream, -3, 10, 0).status()));
  EXPECT_TRUE(
      absl::IsInvalidArgument(DrawCalibration(stream, kMaxCalibrationSamples + 1, 10, 0).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(DrawCalibration(stream, 4, 0, 0).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(DrawCalibration({}, 4, 1, 0).status()));
}

TEST(EvalWindowsTest, ConsecutiveWindowsDropTheTail) {
  const std::vector<int32_t> stream = Iota(10);
  absl::StatusOr<TokenWindows> w = EvalWindows(stream, 3, 0);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->count, 3);
  EXPECT_THAT(w->ids, ElementsAre(0, 1, 2, 3, 4, 5, 6, 7, 8));
  w = EvalWindows(stream, 3, 2);
  ASSERT_TRUE(w.ok());
  EXPECT_THAT(w->ids, ElementsAre(0, 1, 2, 3, 4, 5));
  w = EvalWindows(stream, 11, 0);
  ASSERT_TRUE(absl::IsInvalidArgument(w.status()));
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("10 ids"));
  EXPECT_TRUE(absl::IsInvalidArgument(EvalWindows(stream, 0, 0).status()));
  EXPECT_TRUE(
      absl::IsInvalidArgument(LoadTokenWindows(WriteTemp("w.jsonl", "[1]"), nullptr, 0).status()));
}

}  // namespace
}  // namespace dgptq
