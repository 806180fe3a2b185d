// One place where a dgptq.v1.JobSpec gets its defaults and is checked: the coordinator
// validates submissions with it and the worker turns an Assignment's spec into pipeline
// options with it, so both read a spec the same way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/quant_config.h"
#include "dgptq/v1/job.pb.h"

namespace dgptq {

// Largest world size a job may ask for.
inline constexpr int kMaxJobWorkers = 1024;
// Longest path a job may name, in bytes (PATH_MAX).
inline constexpr size_t kMaxPathBytes = 4096;

// A JobSpec with every default filled in (the proto's "0 means ..." rules).
struct ResolvedJobSpec {
  std::string model_dir;
  std::string out_dir;
  std::string calib_path;  // empty only for RTN jobs
  QuantConfig quant;
  bool rtn = false;
  bool true_sequential = false;
  bool overwrite = false;
  int64_t samples = 128;
  int64_t seq_len = 2048;
  uint64_t seed = 0;
  int num_workers = 1;
  std::string format = "gptq";  // "gptq" or "compressed-tensors"
  v1::DeviceKind device_kind = v1::DEVICE_KIND_UNSPECIFIED;
};

// Fills defaults and checks ranges without touching the filesystem. InvalidArgument names
// the field (as a JobSpec path, e.g. "quantization.bits") and what is allowed; paths must be
// at most kMaxPathBytes long and hold no NUL byte.
absl::StatusOr<ResolvedJobSpec> ResolveJobSpec(const v1::JobSpec& spec);

// OK when `value` is at most `max_bytes` long and holds no NUL byte; InvalidArgument naming
// `field` (e.g. "JobSpec.model_path") and the limit otherwise. Request size limits (issue 6).
absl::Status CheckStringField(absl::string_view field, absl::string_view value, size_t max_bytes);

}  // namespace dgptq
