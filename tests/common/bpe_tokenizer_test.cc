// Byte-level BPE on a small hand-written tokenizer.json: ids below are checked by hand
// against the merge ranks of the fixture.
#include "common/bpe_tokenizer.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace dgptq {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

constexpr char kLlama3Regex[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// GPT-2's byte alphabet, written independently of the implementation: the printable
// bytes keep their code point, the rest count up from U+0100 in byte order.
std::string ByteChar(int b) {
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    int extra = 0;
    for (int i = 0; i < 256; ++i) {
      const bool keep = (i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174);
      const int cp = keep ? i : 256 + extra++;
      t[i] = cp < 0x80 ? std::string(1, static_cast<char>(cp))
                       : std::string{static_cast<char>(0xC0 | (cp >> 6)),
                                     static_cast<char>(0x80 | (cp & 0x3F))};
    }
    return t;
  }();
  return table[b];
}

enum class MergeForm { kStrings, kLists, kMixed };

// Vocabulary: byte b's character has id b; then the merged tokens below; "xyz" (263) is
// reachable only through ignore_merges. Added: <|end|> 300, <s> 301, <mask> 302 (lstrip,
// rstrip).
json Fixture(MergeForm form, bool ignore_merges = false) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteChar(b)] = b;
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"Ġ", "t"},  {"h", "e"}, {"Ġt", "he"}, {"l", "l"},
      {"ll", "o"}, {"3", "4"}, {"'", "s"},   {"Ġ", "Ġ"}};
  const int merged_ids[] = {256, 257, 258, 259, 260, 261, 262, 264};
  json merge_list = json::array();
  for (size_t r = 0; r < merges.size(); ++r) {
    vocab[merges[r].first + merges[r].second] = merged_ids[r];
    const bool as_string = form == MergeForm::kStrings || (form == MergeForm::kMixed && r % 2);
    merge_list.push_back(as_string ? json(merges[r].first + " " + merges[r].second)
                                   : json::array({merges[r].first, merges[r].second}));
  }
  vocab["xyz"] = 263;
  return json{{"version", "1.0"},
              {"added_tokens",
               {{{"id", 300}, {"content", "<|end|>"}, {"special", true}},
                {{"id", 301}, {"content", "<s>"}, {"special", true}},
                {{"id", 302}, {"content", "<mask>"}, {"lstrip", true}, {"rstrip", true}}}},
              {"normalizer", nullptr},
              {"pre_tokenizer",
               {{"type", "Sequence"},
                {"pretokenizers",
                 {{{"type", "Split"},
                   {"pattern", {{"Regex", kLlama3Regex}}},
                   {"behavior", "Isolated"},
                   {"invert", false}},
                  {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
              {"decoder", {{"type", "ByteLevel"}}},
              {"model",
               {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"ignore_merges", ignore_merges},
                {"vocab", vocab},
                {"merges", merge_list}}}};
}

std::unique_ptr<BpeTokenizer> Make(const json& j, const std::string& config = "") {
  absl::StatusOr<std::unique_ptr<BpeTokenizer>> t = BpeTokenizer::FromJson(j.dump(), config, "fx");
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

std::vector<int32_t> Enc(const Tokenizer& t, const std::string& text) {
  absl::StatusOr<std::vector<int32_t>> ids = t.Encode(text);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

class BpeMergeFormTest : public ::testing::TestWithParam<MergeForm> {};

TEST_P(BpeMergeFormTest, EncodesHandCheckedIds) {
  const std::unique_ptr<BpeTokenizer> t = Make(Fixture(GetParam()));
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->vocab_size(), 303);
  EXPECT_THAT(Enc(*t, "the"), ElementsAre(116, 257));    // t + (h e); no "t he" merge
  EXPECT_THAT(Enc(*t, " the"), ElementsAre(258));        // (Ġ t) -> (h e) -> (Ġt he)
  EXPECT_THAT(Enc(*t, "hello"), ElementsAre(257, 260));  // (h e), (l l), (ll o)
  EXPECT_THAT(Enc(*t, "lll"), ElementsAre(259, 108));    // leftmost pair first
  EXPECT_THAT(Enc(*t, "345"), ElementsAre(261, 53));
  EXPECT_THAT(Enc(*t, "12345"), ElementsAre(49, 50, 51, 52, 53));  // "123" | "45"
  EXPECT_THAT(Enc(*t, "it's"), ElementsAre(105, 116, 262));        // "it" | "'s"
  EXPECT_THAT(Enc(*t, "  the"), ElementsAre(32, 258));             // " " | " the"
  EXPECT_THAT(Enc(*t, "x   y"), ElementsAre(120, 264, 32, 121));   // "x" | "  " | " y"
  EXPECT_THAT(Enc(*t, "\xC3\xA9"), ElementsAre(195, 169));         // é: bytes C3 A9
  EXPECT_THAT(Enc(*t, "xyz"), ElementsAre(120, 121, 122));
  EXPECT_TRUE(Enc(*t, "").empty());
}

INSTANTIATE_TEST_SUITE_P(AllForms, BpeMergeFormTest,
                         ::testing::Values(MergeForm::kStrings, MergeForm::kLists,
                                           MergeForm::kMixed));

TEST(BpeTokenizerTest, AddedTokens) {
  const std::unique_ptr<BpeTokenizer> t = Make(Fixture(MergeForm::kStrings));
  ASSERT_NE(t, nullptr);
  EXPECT_THAT(Enc(*t, "the<|end|> the"), ElementsAre(116, 257, 300, 258));
  EXPECT_THAT(Enc(*t, "<s><s>"), ElementsAre(301, 301));
  EXPECT_THAT(Enc(*t, "a <mask> b"), ElementsAre(97, 302, 98));        // lstrip and rstrip
  EXPECT_THAT(Enc(*t, "<|end"), ElementsAre(60, 124, 101, 110, 100));  // not a match
  EXPECT_EQ(t->Decode({116, 257, 300, 258}), "the<|end|> the");
  EXPECT_EQ(t->IdToToken(301), "<s>");
  EXPECT_EQ(t->bos_id(), -1);
  EXPECT_EQ(t->eos_id(), -1);
}

TEST(BpeTokenizerTest, RoundTripsBytes) {
  const std::unique_ptr<BpeTokenizer> t = Make(Fixture(MergeForm::kMixed));
  ASSERT_NE(t, nullptr);
  const std::string text =
      "Hello, world! 123 it's  \n\n café 😀 the\tthe<|end|>\r\nllll 34345 “quoted” \x01\x7f";
  const std::vector<int32_t> ids = Enc(*t, text);
  EXPECT_EQ(t->Decode(ids), text);
  EXPECT_EQ(t->Decode({258, -5, 999, 195, 169}), " the\xC3\xA9");  // bad ids skipped
}

TEST(BpeTokenizerTest, IgnoreMergesTakesWholeWordsFromTheVocabulary) {
  const std::unique_ptr<BpeTokenizer> t = Make(Fixture(MergeForm::kLists, true));
  ASSERT_NE(t, nullptr);
  EXPECT_THAT(Enc(*t, "xyz"), ElementsAre(263));
  EXPECT_THAT(Enc(*t, "hello"), ElementsAre(257, 260));
}

TEST(BpeTokenizerTest, SpecialTokensFromTokenizerConfig) {
  const std::unique_ptr<BpeTokenizer> t =
      Make(Fixture(MergeForm::kStrings),
           R"({"bos_token": "<s>", "eos_token": {"content": "<|end|>", "special": true}})");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->bos_id(), 301);
  EXPECT_EQ(t->eos_id(), 300);
}

TEST(BpeTokenizerTest, InvalidUtf8IsInvalidArgument) {
  const std::unique_ptr<BpeTokenizer> t = Make(Fixture(MergeForm::kStrings));
  ASSERT_NE(t, nullptr);
  EXPECT_TRUE(absl::IsInvalidArgument(t->Encode("ab\xFF").status()));
}

// Each mutation of the fixture, and the text its error must contain.
struct BadCase {
  const char* name;
  void (*mutate)(json*);
  const char* message;
};

const BadCase kBadCases[] = {
    {"merge_out_of_vocab", [](json* j) { (*j)["model"]["merges"].push_back("Ġ q"); },
     "model.merges[8]"},
    {"merge_three_parts", [](json* j) { (*j)["model"]["merges"][0] = "a b c"; }, "model.merges[0]"},
    {"merge_wrong_type", [](json* j) { (*j)["model"]["merges"][1] = 7; }, "model.merges[1]"},
    {"not_bpe", [](json* j) { (*j)["model"]["type"] = "WordPiece"; }, "model.type"},
    {"vocab_not_object", [](json* j) { (*j)["model"]["vocab"] = json::array(); }, "model.vocab"},
    {"negative_id", [](json* j) { (*j)["model"]["vocab"]["a"] = -3; }, "model.vocab"},
    {"huge_id", [](json* j) { (*j)["model"]["vocab"]["a"] = 1ll << 40; }, "model.vocab"},
    {"byte_fallback", [](json* j) { (*j)["model"]["byte_fallback"] = true; }, "byte_fallback"},
    {"regex",
     [](json* j) { (*j)["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\w+"; },
     "pre_tokenizer.pretokenizers[0].pattern"},
    {"normalizer",
     [](json* j) {
       (*j)["normalizer"] = {{"type", "Lowercase"}};
     },
     "normalizer"},
    {"added_no_id", [](json* j) { (*j)["added_tokens"][0].erase("id"); }, "added_tokens[0].id"},
    {"single_word", [](json* j) { (*j)["added_tokens"][1]["single_word"] = true; },
     "added_tokens[1].single_word"},
    {"no_model", [](json* j) { j->erase("model"); }, "model"},
};

TEST(BpeTokenizerTest, MalformedFilesAreInvalidArgumentNamingTheField) {
  for (const BadCase& c : kBadCases) {
    json j = Fixture(MergeForm::kStrings);
    c.mutate(&j);
    absl::StatusOr<std::unique_ptr<BpeTokenizer>> t = BpeTokenizer::FromJson(j.dump(), "", "fx");
    ASSERT_TRUE(absl::IsInvalidArgument(t.status())) << c.name << ": " << t.status();
    EXPECT_THAT(std::string(t.status().message()), HasSubstr(c.message)) << c.name;
    EXPECT_THAT(std::string(t.status().message()), HasSubstr("fx")) << c.name;
  }
  EXPECT_TRUE(absl::IsInvalidArgument(BpeTokenizer::FromJson("[1, 2]", "", "fx").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      BpeTokenizer::FromJson(Fixture(MergeForm::kStrings).dump(), "{bad", "fx").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(BpeTokenizer::FromJson(Fixture(MergeForm::kStrings).dump(),
                                                             R"({"bos_token": "<none>"})", "fx")
                                          .status()));
}

TEST(BpeTokenizerTest, LoadTokenizerReadsTokenizerJsonAndConfig) {
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / "bpe_dir";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << Fixture(MergeForm::kLists).dump(2);
  std::ofstream(dir / "tokenizer_config.json") << R"({"bos_token": "<s>", "eos_token": null})";
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = LoadTokenizer(dir.string());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->bos_id(), 301);
  EXPECT_EQ((*t)->eos_id(), -1);
  absl::StatusOr<std::vector<int32_t>> ids = (*t)->Encode(" the hello");
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre(258, 32, 257, 260));  // " hello": Ġ he llo (no "Ġ he" merge)
}

TEST(BpeTokenizerTest, Gpt2ByteLevelPreTokenizer) {
  json j = Fixture(MergeForm::kStrings);
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  const std::unique_ptr<BpeTokenizer> t = Make(j);
  ASSERT_NE(t, nullptr);
  EXPECT_THAT(Enc(*t, "the"), ElementsAre(258));                    // prefix space added: " the"
  EXPECT_THAT(Enc(*t, "12345"), ElementsAre(32, 49, 50, 261, 53));  // " 12345" is one piece
}

TEST(BpeTokenizerTest, Qwen2SplitKeepsDigitsApart) {
  json j = Fixture(MergeForm::kStrings);
  std::string regex = kLlama3Regex;
  regex.replace(regex.find("{1,3}"), 5, "");
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = regex;
  const std::unique_ptr<BpeTokenizer> t = Make(j);
  ASSERT_NE(t, nullptr);
  EXPECT_THAT(Enc(*t, "345"), ElementsAre(51, 52, 53));  // "3" | "4" | "5": no (3 4) merge
  EXPECT_THAT(Enc(*t, " the"), ElementsAre(258));
}

// Found while seeding fuzz_tokenizer: ids may leave gaps up to 2^24, and a tiny file naming
// the largest id must not cost a table entry per id.
TEST(BpeTokenizerTest, SparseIdsUpToTheLimit) {
  json j = Fixture(MergeForm::kStrings);
  j["added_tokens"] = {{{"id", (1 << 24) - 1}, {"content", "<last>"}}};
  const std::unique_ptr<BpeTokenizer> t = Make(j);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->vocab_size(), 1 << 24);
  EXPECT_EQ(t->IdToToken((1 << 24) - 1), "<last>");
  EXPECT_EQ(t->IdToToken(1 << 20), "");  // unused
  EXPECT_EQ(t->IdToToken(1 << 24), "");  // out of range
  EXPECT_THAT(Enc(*t, "the<last>"), ElementsAre(116, 257, (1 << 24) - 1));
  EXPECT_EQ(t->Decode({116, 1 << 20, (1 << 24) - 1}), "t<last>");
  j["added_tokens"] = {{{"id", 1 << 24}, {"content", "<past>"}}};
  EXPECT_FALSE(BpeTokenizer::FromJson(j.dump(), "", "fx").ok());
}

}  // namespace
}  // namespace dgptq
