// What a model directory's files looked like when a job was planned (size and modification
// time of config.json and the safetensors files), so a worker can tell that a file changed
// on disk between the plan and its load (issue 6) instead of quantizing other weights than
// the plan describes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dgptq {

struct FileStamp {
  std::string name;  // relative to the model directory
  int64_t size = 0;
  int64_t mtime_ns = 0;
};

// config.json, model.safetensors.index.json when present and every *.safetensors file of
// `dir`, sorted by name. The error of reading the directory or a file's status.
absl::StatusOr<std::vector<FileStamp>> StampModelFiles(const std::string& dir);

// FailedPrecondition naming the first file of `planned` that is gone or whose size or
// modification time changed, and any new safetensors file; OK when none did.
absl::Status CheckModelFiles(const std::string& dir, const std::vector<FileStamp>& planned);

}  // namespace dgptq
