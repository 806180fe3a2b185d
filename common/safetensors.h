// safetensors reading (mmap, zero-copy) and sharded checkpoints.
//
// File layout: u64 little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the data section; offsets are relative to the data section's start.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tensor.h"

namespace dgptq {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t begin = 0;  // offset into the data section
  uint64_t end = 0;
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // sorted by begin offset
  std::map<std::string, std::string> metadata;
};

// Largest header accepted (safetensors itself caps it at 100 MB).
inline constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

// Parses and validates a header's JSON against a data section of `data_bytes`:
// known dtypes, non-negative shapes, shape x dtype size == end - begin, offsets
// within the data section and not overlapping, unique names. Errors are
// InvalidArgument naming `file` and the tensor. Pure: the fuzzer's entry point.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view json,
                                                         uint64_t data_bytes,
                                                         std::string_view file);

// Reads and validates only the header of a .safetensors file (no mmap). NotFound if
// missing; InvalidArgument naming the file if truncated or malformed.
absl::StatusOr<SafetensorsHeader> ReadHeaderOnly(const std::string& path);

// One mmap'ed .safetensors file. Views stay valid while the object lives.
// Thread-safe for concurrent reads after Open.
class SafetensorsFile {
 public:
  // NotFound if missing; InvalidArgument (naming the file) if truncated or malformed.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  bool Has(std::string_view name) const;
  const TensorInfo* Find(std::string_view name) const;
  // NotFound naming the tensor and the file.
  absl::StatusOr<TensorView> Get(std::string_view name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  SafetensorsHeader header_;
  const uint8_t* map_ = nullptr;
  size_t map_bytes_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data section
  std::map<std::string, size_t, std::less<>> index_;
};

// A checkpoint directory: model.safetensors, or shards listed by
// model.safetensors.index.json ({"weight_map": {tensor: file}}). Headers only
// are read at Open; shards are mmap'ed lazily on first Get.
class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);
  ~Checkpoint();
  std::vector<std::string> TensorNames() const;
  bool Has(std::string_view name) const;
  // Info (dtype, shape) without mapping data.
  absl::StatusOr<TensorInfo> Info(std::string_view name) const;
  absl::StatusOr<TensorView> Get(std::string_view name);

 private:
  Checkpoint() = default;
  std::string dir_;
  std::map<std::string, std::string, std::less<>> weight_map_;  // tensor -> shard file
  std::map<std::string, TensorInfo, std::less<>> infos_;
  std::map<std::string, std::unique_ptr<SafetensorsFile>, std::less<>> open_;
};

}  // namespace dgptq
