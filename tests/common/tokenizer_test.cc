// Tokenizers: sentencepiece against the shared reference token file, the loader's
// errors, and the hand-written pre-tokenizer scanners.
#include "common/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/bpe_pretokenizer.h"
#include "common/json_util.h"
#include "common/npy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dgptq {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// ../shared beside the checkout, or "" when it is absent.
std::string SharedDir() {
  const std::string dir = std::string(DGPTQ_SOURCE_DIR) + "/../shared";
  return std::filesystem::is_directory(dir) ? dir : std::string();
}

std::string MakeTempDir(const std::string& name) {
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

TEST(SentencePieceTest, TinyStoriesMatchesReferenceTokensExactly) {
  const std::string shared = SharedDir();
  if (shared.empty()) GTEST_SKIP() << "no ../shared";
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
      LoadTokenizer(shared + "/models/tinystories-llama-3m");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 512);
  EXPECT_EQ((*tok)->bos_id(), 1);
  EXPECT_EQ((*tok)->eos_id(), 2);
  absl::StatusOr<std::string> text = ReadFile(shared + "/data/tinystories/tinystories_val.txt");
  ASSERT_TRUE(text.ok()) << text.status();
  absl::StatusOr<std::string> npy = ReadFile(shared + "/data/tinystories/tokens_all.npy");
  ASSERT_TRUE(npy.ok()) << npy.status();
  absl::StatusOr<IdArray> ref = ParseNpy(*npy, "tokens_all.npy");
  ASSERT_TRUE(ref.ok()) << ref.status();
  ASSERT_EQ(ref->ids.size(), 393012u);

  // The whole file as one string, no BOS: the README's recipe.
  absl::StatusOr<std::vector<int32_t>> ids = (*tok)->Encode(*text);
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_EQ(ids->size(), ref->ids.size());
  EXPECT_TRUE(*ids == ref->ids);

  // The model's normalizer collapses repeated spaces, so round trip a line without any.
  const std::string line = "Once upon a time, there was a little girl named Lily.";
  absl::StatusOr<std::vector<int32_t>> line_ids = (*tok)->Encode(line);
  ASSERT_TRUE(line_ids.ok());
  EXPECT_EQ((*tok)->Decode(*line_ids), line);
}

TEST(SentencePieceTest, Llama2RoundTripsWikitextParagraph) {
  const std::string shared = SharedDir();
  if (shared.empty()) GTEST_SKIP() << "no ../shared";
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = LoadTokenizer(shared + "/tokenizers/llama2-32k");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 32000);
  EXPECT_EQ((*tok)->bos_id(), 1);
  EXPECT_EQ((*tok)->eos_id(), 2);
  absl::StatusOr<std::vector<int32_t>> hello = (*tok)->Encode("Hello world");
  ASSERT_TRUE(hello.ok());
  EXPECT_THAT(*hello, ElementsAre(15043, 3186));  // Llama 2's well-known ids, no BOS

  absl::StatusOr<std::string> raw = ReadFile(shared + "/data/wikitext-2-raw/wiki.test.raw");
  ASSERT_TRUE(raw.ok()) << raw.status();
  // The second line: the article's first paragraph (CRLF line endings).
  const size_t start = raw->find("\r\n") + 2;
  const std::string paragraph = raw->substr(start, raw->find("\r\n", start) - start);
  ASSERT_GT(paragraph.size(), 500u);
  absl::StatusOr<std::vector<int32_t>> ids = (*tok)->Encode(paragraph);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_GT(ids->size(), 100u);
  EXPECT_LT(ids->size(), paragraph.size() / 2);
  for (const int32_t id : *ids) ASSERT_TRUE(id >= 0 && id < 32000) << id;
  EXPECT_EQ((*tok)->Decode(*ids), paragraph);
  // Ids out of range are skipped by Decode.
  std::vector<int32_t> with_bad = *ids;
  with_bad.push_back(-1);
  with_bad.push_back(32000);
  EXPECT_EQ((*tok)->Decode(with_bad), paragraph);
}

TEST(LoadTokenizerTest, MissingFilesIsNotFoundNamingTheDirectory) {
  const std::string dir = MakeTempDir("tok_missing");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = LoadTokenizer(dir);
  ASSERT_TRUE(absl::IsNotFound(tok.status())) << tok.status();
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr(dir));
}

TEST(LoadTokenizerTest, BrokenFilesAreInvalidArgumentNamingTheFile) {
  const std::string dir = MakeTempDir("tok_broken_json");
  WriteText(dir + "/tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": ");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = LoadTokenizer(dir);
  ASSERT_TRUE(absl::IsInvalidArgument(tok.status())) << tok.status();
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr(dir + "/tokenizer.json"));

  const std::string sp_dir = MakeTempDir("tok_broken_sp");
  WriteText(sp_dir + "/tokenizer.model", "this is not a protobuf \xff\xfe");
  tok = LoadTokenizer(sp_dir);
  ASSERT_TRUE(absl::IsInvalidArgument(tok.status())) << tok.status();
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr(sp_dir + "/tokenizer.model"));
}

std::vector<std::string> Pieces(const std::vector<std::string_view>& v) {
  return std::vector<std::string>(v.begin(), v.end());
}

TEST(PreTokenizerTest, Llama3Split) {
  EXPECT_THAT(Pieces(SplitLlama3("Hello world", 3)), ElementsAre("Hello", " world"));
  EXPECT_THAT(Pieces(SplitLlama3("  hello", 3)), ElementsAre(" ", " hello"));
  EXPECT_THAT(Pieces(SplitLlama3("I'm 12345 ok!!\n\nyes", 3)),
              ElementsAre("I", "'m", " ", "123", "45", " ok", "!!\n\n", "yes"));
  EXPECT_THAT(Pieces(SplitLlama3("a\n\n b", 3)), ElementsAre("a", "\n\n", " b"));
  EXPECT_THAT(Pieces(SplitLlama3("don'T WE'LL", 3)), ElementsAre("don", "'T", " WE", "'LL"));
  EXPECT_THAT(Pieces(SplitLlama3("x  \n", 3)), ElementsAre("x", "  \n"));
  EXPECT_THAT(Pieces(SplitLlama3("end   ", 3)), ElementsAre("end", "   "));
  EXPECT_THAT(Pieces(SplitLlama3("(hello) \"x\"", 3)),
              ElementsAre("(hello", ")", " \"", "x", "\""));
  EXPECT_THAT(Pieces(SplitLlama3("\tfoo", 3)), ElementsAre("\tfoo"));
  // Non-ASCII: letters, curly quotes (punctuation), CJK punctuation, Arabic-Indic digits.
  EXPECT_THAT(Pieces(SplitLlama3("naïve café", 3)), ElementsAre("naïve", " café"));
  EXPECT_THAT(Pieces(SplitLlama3("“Hi”", 3)), ElementsAre("“Hi", "”"));
  EXPECT_THAT(Pieces(SplitLlama3("你好，世界", 3)), ElementsAre("你好", "，世界"));
  EXPECT_THAT(Pieces(SplitLlama3("٣٤٥٦", 3)), ElementsAre("٣٤٥", "٦"));
  // Qwen 2: one digit per piece.
  EXPECT_THAT(Pieces(SplitLlama3("2024", 1)), ElementsAre("2", "0", "2", "4"));
  EXPECT_TRUE(SplitLlama3("", 3).empty());
}

TEST(PreTokenizerTest, Gpt2Split) {
  EXPECT_THAT(Pieces(SplitGpt2("Hello  world 123")), ElementsAre("Hello", " ", " world", " 123"));
  EXPECT_THAT(Pieces(SplitGpt2("don'T it's")), ElementsAre("don", "'", "T", " it", "'s"));
  EXPECT_THAT(Pieces(SplitGpt2("a\n\nb 12345!?")),
              ElementsAre("a", "\n", "\n", "b", " 12345", "!?"));
  EXPECT_THAT(Pieces(SplitGpt2("x  ")), ElementsAre("x", "  "));
}

TEST(PreTokenizerTest, ClassifyAndUtf8) {
  EXPECT_EQ(ClassifyCodePoint('A'), CharClass::kLetter);
  EXPECT_EQ(ClassifyCodePoint('7'), CharClass::kNumber);
  EXPECT_EQ(ClassifyCodePoint('\n'), CharClass::kSpace);
  EXPECT_EQ(ClassifyCodePoint('_'), CharClass::kOther);
  EXPECT_EQ(ClassifyCodePoint(0x00A0), CharClass::kSpace);
  EXPECT_EQ(ClassifyCodePoint(0x00E9), CharClass::kLetter);  // é
  EXPECT_EQ(ClassifyCodePoint(0x00BD), CharClass::kNumber);  // ½
  EXPECT_EQ(ClassifyCodePoint(0x2019), CharClass::kOther);   // ’
  EXPECT_EQ(ClassifyCodePoint(0x0661), CharClass::kNumber);  // ١
  EXPECT_EQ(ClassifyCodePoint(0x4E2D), CharClass::kLetter);  // 中
  EXPECT_EQ(ClassifyCodePoint(0x3000), CharClass::kSpace);
  EXPECT_EQ(ClassifyCodePoint(0x1F600), CharClass::kOther);  // 😀
  EXPECT_TRUE(IsValidUtf8("plain ascii, é, 中, 😀"));
  EXPECT_FALSE(IsValidUtf8("\xC0\x80"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xE4\xBD"));          // truncated
  EXPECT_FALSE(IsValidUtf8("\x80"));              // stray continuation byte
}

}  // namespace
}  // namespace dgptq
