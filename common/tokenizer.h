// Tokenizers: text <-> token ids for calibration and evaluation data.
//
// Two implementations sit behind one interface:
//   - sentencepiece models (`tokenizer.model`: Llama 1/2, Mistral, the llama2.c
//     TinyStories models), run by libsentencepiece;
//   - Hugging Face byte-level BPE (`tokenizer.json`: GPT-2, Llama 3, Qwen 2), our own
//     implementation in common/bpe_tokenizer.h.
// Encode never adds BOS/EOS: callers that want them prepend bos_id() themselves.
// Implementations are immutable after loading and thread-safe for concurrent calls.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace dgptq {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text` (UTF-8), each in [0, vocab_size()). InvalidArgument when the
  // text cannot be encoded (the BPE tokenizer rejects invalid UTF-8).
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const = 0;
  // Text of `ids`; ids outside [0, vocab_size()) are skipped. Special tokens are kept.
  virtual std::string Decode(const std::vector<int32_t>& ids) const = 0;
  // Number of ids (largest id + 1).
  virtual int64_t vocab_size() const = 0;
  // Beginning/end-of-sequence ids, or -1 when the tokenizer defines none.
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
};

// Loads the tokenizer of a model directory: `tokenizer.model` (sentencepiece) if
// present, else `tokenizer.json` (byte-level BPE; `tokenizer_config.json`, when
// present, names its bos/eos tokens). NotFound naming `model_dir` when neither file
// exists; InvalidArgument naming the file when it is malformed or unsupported.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir);

// Loads one sentencepiece model file. NotFound if it does not exist, InvalidArgument
// naming it if sentencepiece cannot parse it.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(const std::string& path);

}  // namespace dgptq
