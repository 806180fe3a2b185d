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

// Writes a checkpoint directory as parts, published as shards by Finish().
//
// A part is one .safetensors file `<dir>/<part>.part.safetensors`, written atomically
// (nothing appears under its name until it is complete). Tensors go to the part named by
// BeginPart() until EndPart(), or, outside a named part, to automatic parts "auto-00001",
// ... of at most `max_shard_bytes` each. Several writers (processes) may write parts into
// one directory; parts are durable once ended, so an interrupted writer's finished parts
// can be kept and the work resumed (worker/output/model_writer.h).
//
// Finish() ends the open part and publishes every part in the directory, in name order:
// one part becomes "model.safetensors"; several become "model-00001-of-0000N.safetensors",
// ... with model.safetensors.index.json. Not thread-safe.
class ShardedWriter {
 public:
  // InvalidArgument for a zero max_shard_bytes; the error of opening `dir` for writing.
  static absl::StatusOr<std::unique_ptr<ShardedWriter>> Create(const std::string& dir,
                                                               uint64_t max_shard_bytes);
  // Unfinished: removes the open part's temporaries and the automatic parts; ended named
  // parts stay (they are what a resumed run keeps).
  ~ShardedWriter();
  // InvalidArgument for a duplicate name (within this writer) or a bad view.
  absl::Status Add(const std::string& name, const TensorView& t);
  // Ends the open part (automatic or named) and starts `part` (letters, digits, '.', '-',
  // '_'). InvalidArgument for another name or one this writer already used.
  absl::Status BeginPart(const std::string& part);
  // Writes the open part (a part without tensors writes no file). No-op without one.
  absl::Status EndPart();
  absl::Status Finish();

 private:
  struct Impl;
  explicit ShardedWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The file name suffix of a part: `<part>.part.safetensors`.
inline constexpr char kPartFileSuffix[] = ".part.safetensors";

// The finished parts in `dir` (any writer's), by part name, with their tensors' names in
// the order stored. InvalidArgument naming a malformed part file.
absl::StatusOr<std::map<std::string, std::vector<std::string>>> ListParts(
    const std::string& dir);
// Writes model.safetensors.index.json mapping every tensor of the finished parts in `dir`
// to its part file, so a checkpoint reader can read the parts before Finish(). A tensor in
// two parts is InvalidArgument naming both.
absl::Status WritePartsIndex(const std::string& dir);
// Removes the named parts of `dir` (missing ones are fine).
absl::Status RemoveParts(const std::string& dir, const std::vector<std::string>& parts);

}  // namespace dgptq
