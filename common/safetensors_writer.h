// Streaming, sharded, atomic safetensors writing.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/tensor.h"

namespace dgptq {

// Writes one .safetensors file. Tensors are appended to a temporary file as they
// are added (only headers are kept in memory); Finish() writes the header and
// renames into place, so a crash never leaves a partial file under `path`.
// Not thread-safe.
class SafetensorsFileWriter {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFileWriter>> Create(
      const std::string& path, std::map<std::string, std::string> metadata = {});
  ~SafetensorsFileWriter();  // removes the temporary file unless Finish() succeeded

  // InvalidArgument for a duplicate name or size mismatch.
  absl::Status Add(const std::string& name, const TensorView& t);
  absl::Status Finish();
  uint64_t data_bytes() const;

 private:
  struct Impl;
  explicit SafetensorsFileWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Writes a checkpoint directory in shards of at most `max_shard_bytes`
// ("model-00001-of-00003.safetensors", ...; a single "model.safetensors" when one
// shard suffices) plus model.safetensors.index.json. Nothing appears under the
// final shard names until Finish().
class ShardedWriter {
 public:
  static absl::StatusOr<std::unique_ptr<ShardedWriter>> Create(const std::string& dir,
                                                               uint64_t max_shard_bytes);
  ~ShardedWriter();
  absl::Status Add(const std::string& name, const TensorView& t);
  absl::Status Finish();

 private:
  struct Impl;
  explicit ShardedWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dgptq
