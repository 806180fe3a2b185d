// A thin wrapper over sentencepiece::SentencePieceProcessor that exposes only standard
// C++ types. Why it exists: sentencepiece_processor.h declares
// `namespace absl { using std::string_view; }`, which collides with Debian abseil's own
// absl::string_view class, so no translation unit may include both. Only
// sentencepiece_shim.cc includes the sentencepiece header; common/tokenizer.cc uses
// this class and converts its results to absl::Status.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}  // namespace sentencepiece

namespace dgptq::internal {

// Result of a sentencepiece call: `code` is sentencepiece's util::StatusCode as an
// int (its values mirror absl::StatusCode; 0 is OK), `message` the library's text.
struct SpResult {
  int code = 0;
  std::string message;
  bool ok() const { return code == 0; }
};

// Thread-safe for concurrent const calls after Load (sentencepiece's encoder and
// decoder are const and keep no mutable state).
class SentencePieceShim {
 public:
  SentencePieceShim();
  ~SentencePieceShim();
  SentencePieceShim(const SentencePieceShim&) = delete;
  SentencePieceShim& operator=(const SentencePieceShim&) = delete;

  // Loads a serialized ModelProto (a tokenizer.model file).
  SpResult Load(const std::string& path);
  // Encodes `text` as one sentence; no BOS/EOS are added.
  SpResult Encode(std::string_view text, std::vector<int>* ids) const;
  // Decodes ids, each in [0, piece_size()) (the caller filters).
  SpResult Decode(const std::vector<int>& ids, std::string* text) const;

  int piece_size() const;
  int bos_id() const;  // -1 when the model has none
  int eos_id() const;  // -1 when the model has none

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

}  // namespace dgptq::internal
