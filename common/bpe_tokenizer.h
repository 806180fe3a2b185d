// Hugging Face byte-level BPE (`tokenizer.json` with model.type "BPE": GPT-2, Llama 3,
// Qwen 2), our own implementation of what the `tokenizers` library does for them:
//   1. split the text on added tokens (longest match first; lstrip/rstrip honoured);
//   2. pre-tokenize each remaining segment with the Split regex of the file (the
//      Llama 3 pattern, or Qwen 2's one-digit variant) or, for ByteLevel with
//      use_regex, the GPT-2 pattern (common/bpe_pretokenizer.h);
//   3. map each piece's bytes to GPT-2's byte-to-unicode alphabet (printable bytes
//      ! .. ~, ¡ .. ¬, ® .. ÿ stand for themselves; the other 68 bytes, in increasing
//      order, become U+0100, U+0101, ...);
//   4. if model.ignore_merges and the mapped piece is in the vocabulary, emit it;
//      else apply merges by rank (lowest first, leftmost first among equals).
// Decode maps ids back to token strings, and those through the inverse byte mapping
// (a token with a character outside the alphabet, e.g. an added token, is kept as its
// UTF-8 text). The result is raw bytes: ids that split a character give invalid UTF-8.
//
// Accepted: `normalizer` null or NFC (input is taken as already NFC: no normalization
// runs); `pre_tokenizer` null (no split), ByteLevel, Split with a supported regex, or a
// Sequence of those; merges as "a b" strings or ["a", "b"] pairs. Anything else —
// continuing_subword_prefix, end_of_word_suffix, byte_fallback, single_word added
// tokens, other normalizers or regexes — is InvalidArgument naming the file and field.
// Immutable after loading; thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer.h"

namespace dgptq {

class BpeTokenizer : public Tokenizer {
 public:
  // Parses tokenizer.json text. `config_json` is the text of tokenizer_config.json, or
  // empty: its "bos_token"/"eos_token" (a string or {"content": ...}) name the bos/eos
  // ids, which are -1 otherwise. InvalidArgument naming `source` (and the field).
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromJson(std::string_view json,
                                                                std::string_view config_json,
                                                                std::string_view source);
  // Reads `path` (and, when it exists, tokenizer_config.json in the same directory).
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> Load(const std::string& path);

  // InvalidArgument for invalid UTF-8, or for a byte with no token (and no unk_token).
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const override;
  std::string Decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override { return vocab_size_; }
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }

  // The token string of `id` ("" for an unused id or one out of range).
  std::string_view IdToToken(int32_t id) const;

  // Parsed form of tokenizer.json, filled by the loader (bpe_tokenizer_json.cc).
  enum class Split { kNone, kGpt2, kLlama3 };
  struct AddedToken {
    std::string content;
    int32_t id = 0;
    bool lstrip = false;
    bool rstrip = false;
  };
  struct Spec {
    std::unordered_map<std::string, int32_t> vocab;
    std::vector<std::pair<std::string, std::string>> merges;  // in rank order
    std::vector<AddedToken> added;
    Split split = Split::kNone;
    int max_digits = 3;  // Llama 3: \p{N}{1,3}; Qwen 2: \p{N}
    bool add_prefix_space = false;
    bool ignore_merges = false;
    std::string unk_token;  // empty: none
    std::string bos_token, eos_token;
  };
  // Builds the tokenizer from a parsed spec: merges must name vocabulary tokens whose
  // concatenation is in the vocabulary. InvalidArgument naming `source`.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromSpec(Spec spec, std::string_view source);

 private:
  BpeTokenizer() = default;
  // Fills byte_char_, char_to_byte_ and byte_id_ (GPT-2's byte alphabet).
  void BuildByteTables(const std::unordered_map<std::string, int32_t>& vocab);
  // Appends the ids of one pre-tokenized piece.
  absl::Status EncodePiece(std::string_view piece, std::vector<int32_t>* ids) const;
  // Appends the ids of text holding no added token.
  absl::Status EncodeSegment(std::string_view text, std::vector<int32_t>* ids) const;

  Spec spec_;
  // Sparse: memory follows the file's size, not its largest id (a 100-byte file may name
  // id 2^24 - 1; a dense table would hold 16M strings).
  std::unordered_map<int32_t, std::string> id_to_token_;
  int64_t vocab_size_ = 0;                                            // largest id + 1
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (a,b) -> (rank, id)
  std::vector<int32_t> byte_id_;  // [256]: token id of each byte's character, -1 if none
  std::unordered_map<char32_t, uint8_t> char_to_byte_;
  std::vector<std::string> byte_char_;        // [256]: UTF-8 of each byte's character
  std::array<bool, 256> added_first_byte_{};  // bytes that start an added token
  int32_t unk_id_ = -1;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
};

// Parses tokenizer.json into a spec (bpe_tokenizer_json.cc). InvalidArgument naming
// `source` and the field.
absl::StatusOr<BpeTokenizer::Spec> ParseBpeJson(std::string_view json, std::string_view config_json,
                                                std::string_view source);

}  // namespace dgptq
