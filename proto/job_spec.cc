#include "proto/job_spec.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "common/token_data.h"

namespace dgptq {
namespace {

absl::Status Field(const char* name, const absl::Status& s) {
  if (s.ok()) return s;
  return absl::InvalidArgumentError(absl::StrCat("JobSpec.", name, ": ", s.message()));
}

}  // namespace

absl::Status CheckStringField(absl::string_view field, absl::string_view value, size_t max_bytes) {
  if (value.size() > max_bytes) {
    return absl::InvalidArgumentError(absl::StrFormat("%s is %d bytes long; at most %d allowed",
                                                      field, value.size(), max_bytes));
  }
  if (value.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must not contain a NUL byte"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ResolvedJobSpec> ResolveJobSpec(const v1::JobSpec& spec) {
  ResolvedJobSpec r;
  if (spec.model_path().empty()) return absl::InvalidArgumentError("JobSpec.model_path is required");
  if (spec.output_path().empty()) return absl::InvalidArgumentError("JobSpec.output_path is required");
  DGPTQ_RETURN_IF_ERROR(CheckStringField("JobSpec.model_path", spec.model_path(), kMaxPathBytes));
  DGPTQ_RETURN_IF_ERROR(CheckStringField("JobSpec.output_path", spec.output_path(), kMaxPathBytes));
  DGPTQ_RETURN_IF_ERROR(
      CheckStringField("JobSpec.calibration.path", spec.calibration().path(), kMaxPathBytes));
  r.model_dir = spec.model_path();
  r.out_dir = spec.output_path();
  r.overwrite = spec.overwrite();

  const v1::QuantizationConfig& q = spec.quantization();
  r.quant.bits = q.bits() == 0 ? 4 : q.bits();
  r.quant.group_size = q.group_size() == 0 ? 128 : q.group_size();
  r.quant.sym = !q.asym();
  r.quant.act_order = q.act_order();
  r.quant.static_groups = q.static_groups();
  if (q.damp_percent() < 0 || q.damp_percent() >= 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "JobSpec.quantization.damp_percent must be in [0, 1) (a fraction of the mean "
        "diagonal; 0 means 0.01), got %g", q.damp_percent()));
  }
  r.quant.damp_percent = q.damp_percent() == 0 ? 0.01f : static_cast<float>(q.damp_percent());
  r.quant.block_size = q.block_size() == 0 ? 128 : q.block_size();
  r.quant.mse = q.mse();
  DGPTQ_RETURN_IF_ERROR(Field("quantization", r.quant.Validate()));
  r.rtn = q.rtn();
  r.true_sequential = q.true_sequential();

  const v1::CalibrationSpec& c = spec.calibration();
  r.calib_path = c.path();
  if (!r.rtn && r.calib_path.empty()) {
    return absl::InvalidArgumentError(
        "JobSpec.calibration.path is required for GPTQ (only rtn jobs run without data)");
  }
  r.samples = c.samples() == 0 ? 128 : c.samples();
  r.seq_len = c.seq_len() == 0 ? 2048 : c.seq_len();
  r.seed = c.seed();
  if (r.samples < 1 || r.samples > kMaxCalibrationSamples) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "JobSpec.calibration.samples must be in [1, %d], got %d", kMaxCalibrationSamples, r.samples));
  }
  if (r.seq_len < 1 || r.seq_len > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("JobSpec.calibration.seq_len must be in [1, 2^20], got %d", r.seq_len));
  }

  r.num_workers = spec.num_workers() == 0 ? 1 : spec.num_workers();
  if (r.num_workers < 1 || r.num_workers > kMaxJobWorkers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "JobSpec.num_workers must be in [1, %d], got %d", kMaxJobWorkers, spec.num_workers()));
  }
  if (!r.rtn && r.num_workers > r.samples) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "JobSpec.num_workers %d exceeds calibration.samples %d: every rank needs at least one "
        "sample", r.num_workers, r.samples));
  }
  r.device_kind = spec.worker_device_kind();
  if (!v1::DeviceKind_IsValid(r.device_kind)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("JobSpec.worker_device_kind %d is not a DeviceKind", r.device_kind));
  }
  switch (spec.output_format()) {
    case v1::OUTPUT_FORMAT_UNSPECIFIED:
    case v1::OUTPUT_FORMAT_GPTQ: r.format = "gptq"; break;
    case v1::OUTPUT_FORMAT_COMPRESSED_TENSORS: r.format = "compressed-tensors"; break;
    default:
      return absl::InvalidArgumentError(
          absl::StrFormat("JobSpec.output_format %d is not an OutputFormat", spec.output_format()));
  }
  if (r.format == "gptq" && !r.quant.sym) {
    return absl::InvalidArgumentError(
        "JobSpec: asymmetric quantization (quantization.asym) cannot be stored in the "
        "GPTQ v1 format; drop asym or set output_format = OUTPUT_FORMAT_COMPRESSED_TENSORS");
  }
  return r;
}

}  // namespace dgptq
