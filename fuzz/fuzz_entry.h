// Entry points shared by the libFuzzer targets and the corpus replay test
// (tests/common/fuzz_corpus_test.cc). Each returns the parser's status, or Internal
// when a parse that succeeded broke an invariant the parser promises; the fuzz
// targets abort on Internal, and the replay test fails on it.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/bpe_pretokenizer.h"
#include "common/bpe_tokenizer.h"
#include "common/model_config.h"
#include "common/npy.h"
#include "common/safetensors.h"
#include "common/token_data.h"

namespace dgptq::fuzz {

// Input layout: 8 bytes little-endian data-section size (shorter inputs read as
// zero-padded), then the header JSON.
inline absl::Status FuzzSafetensorsHeader(const uint8_t* data, size_t size) {
  uint64_t data_bytes = 0;
  const size_t prefix = std::min<size_t>(size, 8);
  if (prefix > 0) std::memcpy(&data_bytes, data, prefix);
  const std::string_view json(reinterpret_cast<const char*>(data) + prefix, size - prefix);
  absl::StatusOr<SafetensorsHeader> h = ParseSafetensorsHeader(json, data_bytes, "fuzz");
  if (!h.ok()) return h.status();
  uint64_t reach = 0;  // furthest end of a non-empty tensor so far
  for (const TensorInfo& t : h->tensors) {
    if (t.begin > t.end || t.end > data_bytes) return absl::InternalError("range escapes");
    uint64_t bytes = DTypeSize(t.dtype);
    for (int64_t d : t.shape) {
      if (d < 0) return absl::InternalError("negative dimension");
      bytes *= static_cast<uint64_t>(d);
    }
    if (bytes != t.end - t.begin) return absl::InternalError("size mismatch accepted");
    if (t.begin == t.end) continue;
    if (t.begin < reach) return absl::InternalError("overlap or unsorted accepted");
    reach = t.end;
  }
  return absl::OkStatus();
}

// Input: config.json text.
inline absl::Status FuzzModelConfig(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<ModelConfig> c = ParseModelConfig(text, "fuzz");
  if (!c.ok()) return c.status();
  if (c->hidden_size <= 0 || c->intermediate_size <= 0 || c->num_hidden_layers <= 0 ||
      c->vocab_size <= 0 || c->head_dim <= 0 || c->num_key_value_heads <= 0 ||
      c->num_attention_heads % c->num_key_value_heads != 0) {
    return absl::InternalError("invalid sizes accepted");
  }
  return absl::OkStatus();
}

// Input: the bytes of a .npy file.
inline absl::Status FuzzNpy(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<IdArray> a = ParseNpy(bytes, "fuzz");
  if (!a.ok()) return a.status();
  if (a->shape.empty() || a->shape.size() > 2) return absl::InternalError("rank accepted");
  uint64_t numel = 1;
  for (int64_t d : a->shape) {
    if (d < 0) return absl::InternalError("negative dimension");
    numel *= static_cast<uint64_t>(d);
  }
  if (numel != a->ids.size()) return absl::InternalError("shape and ids disagree");
  if (numel * sizeof(int32_t) > size) return absl::InternalError("more ids than bytes");
  return absl::OkStatus();
}

// Internal unless `pieces` are non-empty views that tile `text` in order.
inline absl::Status CheckTiles(std::string_view text, const std::vector<std::string_view>& pieces) {
  const char* next = text.data();
  for (std::string_view p : pieces) {
    if (p.empty() || p.data() != next) return absl::InternalError("pieces do not tile the text");
    next += p.size();
  }
  if (next != text.data() + text.size()) return absl::InternalError("pieces miss the text's end");
  return absl::OkStatus();
}

// Input: tokenizer.json, a NUL byte, tokenizer_config.json, a NUL byte, then a text (missing
// parts read as empty). A valid UTF-8 text is split with the GPT-2 and Llama 3 / Qwen 2
// pre-tokenizers first; a tokenizer that loads encodes and decodes it.
inline absl::Status FuzzTokenizer(const uint8_t* data, size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  auto next_part = [&rest] {
    const size_t cut = std::min(rest.find('\0'), rest.size());
    const std::string_view part = rest.substr(0, cut);
    rest.remove_prefix(std::min(cut + 1, rest.size()));
    return part;
  };
  const std::string_view json = next_part();
  const std::string_view config = next_part();
  const std::string_view text = rest;
  if (IsValidUtf8(text)) {
    if (absl::Status s = CheckTiles(text, SplitGpt2(text)); !s.ok()) return s;
    if (absl::Status s = CheckTiles(text, SplitLlama3(text, 1)); !s.ok()) return s;
    if (absl::Status s = CheckTiles(text, SplitLlama3(text, 3)); !s.ok()) return s;
  }
  absl::StatusOr<std::unique_ptr<BpeTokenizer>> t = BpeTokenizer::FromJson(json, config, "fuzz");
  if (!t.ok()) return t.status();
  const int64_t vocab = (*t)->vocab_size();
  if ((*t)->bos_id() < -1 || (*t)->bos_id() >= vocab || (*t)->eos_id() < -1 ||
      (*t)->eos_id() >= vocab) {
    return absl::InternalError("bos/eos id outside the vocabulary");
  }
  absl::StatusOr<std::vector<int32_t>> ids = (*t)->Encode(text);
  if (!ids.ok()) return ids.status();
  for (const int32_t id : *ids) {
    if (id < 0 || id >= vocab) return absl::InternalError("encoded id outside the vocabulary");
  }
  (*t)->Decode(*ids);
  return absl::OkStatus();
}

// The tokenizer FuzzCalibration reads .txt files with: a few byte-level tokens, "<unk>" for
// every other byte, one added token.
inline const Tokenizer& CalibrationTokenizer() {
  static const std::unique_ptr<BpeTokenizer> tok = [] {
    absl::StatusOr<std::unique_ptr<BpeTokenizer>> t = BpeTokenizer::FromJson(
        R"({"model": {"type": "BPE", "unk_token": "<unk>", "merges": ["a b", "\u0120 ab"],
            "vocab": {"<unk>": 0, "a": 1, "b": 2, "ab": 3, "\u0120": 4, "\u0120ab": 5}},
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},
            "added_tokens": [{"id": 6, "content": "<s>"}]})",
        "", "calibration tokenizer");
    if (!t.ok()) std::abort();  // the literal above is wrong
    return std::move(*t);
  }();
  return *tok;
}

// Internal unless `w` holds `count` >= 1 windows of `seq_len` ids below `vocab`.
inline absl::Status CheckWindows(const TokenWindows& w, int64_t seq_len, int64_t vocab) {
  if (w.count < 1 || w.seq_len != seq_len ||
      w.ids.size() != static_cast<size_t>(w.count * seq_len)) {
    return absl::InternalError("windows of the wrong shape");
  }
  for (const int32_t id : w.ids) {
    if (id < 0 || id >= vocab) return absl::InternalError("window id outside the vocabulary");
  }
  return absl::OkStatus();
}

// Input: byte 0 picks the file type (value % 4: .txt, .jsonl, .npy, .safetensors) and whether
// a tokenizer bounds the ids (bit 2; .txt always has one), byte 1 the window length
// (1 + value % 64) and the calibration samples (1 + value / 64); the rest is the file. It is
// written to a temporary file and read back with LoadTokenWindows, and with LoadTokenStream
// then DrawCalibration, which must succeed exactly when the stream holds one window.
inline absl::Status FuzzCalibration(const uint8_t* data, size_t size) {
  if (size < 2) return absl::InvalidArgumentError("too short");
  static const char* const kExt[] = {".txt", ".jsonl", ".npy", ".safetensors"};
  const std::string path = (std::filesystem::temp_directory_path() /
                            absl::StrCat("dgptq_fuzz_calibration.", getpid(), kExt[data[0] % 4]))
                               .string();
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(data) + 2, static_cast<std::streamsize>(size - 2));
  const Tokenizer* tok = (data[0] % 4 == 0 || (data[0] & 4)) ? &CalibrationTokenizer() : nullptr;
  const int64_t vocab = tok != nullptr ? tok->vocab_size() : int64_t{1} << 31;
  const int64_t seq_len = 1 + data[1] % 64, samples = 1 + data[1] / 64;
  absl::StatusOr<TokenWindows> windows = LoadTokenWindows(path, tok, seq_len);
  absl::StatusOr<std::vector<int32_t>> stream = LoadTokenStream(path, tok);
  std::filesystem::remove(path);
  // The file exists: every failure must be InvalidArgument.
  for (const absl::Status& s : {windows.status(), stream.status()}) {
    if (!s.ok() && !absl::IsInvalidArgument(s)) return absl::InternalError(s.ToString());
  }
  if (windows.ok()) {
    if (!stream.ok()) return absl::InternalError("windows read from a file whose ids do not load");
    if (absl::Status s = CheckWindows(*windows, seq_len, vocab); !s.ok()) return s;
  }
  if (!stream.ok()) return stream.status();
  absl::StatusOr<TokenWindows> drawn = DrawCalibration(*stream, samples, seq_len, size);
  if (drawn.ok() != (static_cast<int64_t>(stream->size()) >= seq_len)) {
    return absl::InternalError("DrawCalibration disagrees with the stream length");
  }
  if (!drawn.ok()) return drawn.status();
  if (drawn->count != samples) return absl::InternalError("wrong number of samples");
  return CheckWindows(*drawn, seq_len, vocab);
}

}  // namespace dgptq::fuzz
