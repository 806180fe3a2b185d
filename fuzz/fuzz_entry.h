// Entry points shared by the libFuzzer targets and the corpus replay test
// (tests/common/fuzz_corpus_test.cc). Each returns the parser's status, or Internal
// when a parse that succeeded broke an invariant the parser promises; the fuzz
// targets abort on Internal, and the replay test fails on it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "absl/status/status.h"
#include "common/model_config.h"
#include "common/npy.h"
#include "common/safetensors.h"

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

}  // namespace dgptq::fuzz
