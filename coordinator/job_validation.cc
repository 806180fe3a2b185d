#include "coordinator/job_validation.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "coordinator/planner.h"

namespace dgptq::coordinator {
namespace fs = std::filesystem;
namespace {

// Symlinks and ".." resolved; a missing tail is kept lexically (weakly_canonical resolves the
// nearest existing ancestor, and a part that does not exist cannot be a symlink).
fs::path Resolve(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::absolute(path, ec), ec);
  if (ec) p = fs::absolute(path, ec).lexically_normal();
  return p;
}

bool IsInside(const fs::path& p, const fs::path& root) {
  auto pi = p.begin();
  for (auto ri = root.begin(); ri != root.end(); ++ri, ++pi) {
    if (ri->empty()) continue;  // trailing "/" of a root
    if (pi == p.end() || *pi != *ri) return false;
  }
  return true;
}

absl::Status CheckModelDir(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(
        absl::StrCat("JobSpec.model_path '", dir, "' is not an existing directory"));
  }
  if (!fs::exists(fs::path(dir) / "config.json", ec)) {
    return absl::NotFoundError(absl::StrCat("JobSpec.model_path '", dir, "' has no config.json"));
  }
  return absl::OkStatus();
}

absl::Status CheckOutputDir(const ResolvedJobSpec& r) {
  if (Resolve(r.out_dir) == Resolve(r.model_dir)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "JobSpec.output_path '", r.out_dir, "' is the model_path: write the output elsewhere"));
  }
  std::error_code ec;
  if (!fs::exists(r.out_dir, ec)) return absl::OkStatus();
  if (!fs::is_directory(r.out_dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("JobSpec.output_path '", r.out_dir, "' exists and is not a directory"));
  }
  if (!r.overwrite && HoldsModel(r.out_dir)) {
    return absl::FailedPreconditionError(
        absl::StrCat("JobSpec.output_path '", r.out_dir, "' already holds a model; set overwrite"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckInsideRoots(const std::string& field, const std::string& path,
                              const std::vector<std::string>& roots) {
  if (roots.empty()) return absl::OkStatus();
  const fs::path resolved = Resolve(path);
  for (const std::string& root : roots) {
    if (IsInside(resolved, Resolve(root))) return absl::OkStatus();
  }
  return absl::PermissionDeniedError(
      absl::StrCat("JobSpec.", field, " '", path, "' (resolves to '", resolved.string(),
                   "') is outside the allowed roots: ", absl::StrJoin(roots, ", ")));
}

bool HoldsModel(const std::string& dir) {
  std::error_code ec;
  if (fs::exists(fs::path(dir) / "config.json", ec)) return true;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".safetensors") return true;
  }
  return false;
}

int64_t PlanSamples(const ResolvedJobSpec& spec) {
  return spec.rtn ? std::max<int64_t>(spec.samples, spec.num_workers) : spec.samples;
}

absl::StatusOr<ValidatedJob> ValidateJob(const v1::JobSpec& spec,
                                         const std::vector<std::string>& allowed_roots) {
  ValidatedJob v;
  DGPTQ_ASSIGN_OR_RETURN(v.spec, ResolveJobSpec(spec));
  const ResolvedJobSpec& r = v.spec;
  DGPTQ_RETURN_IF_ERROR(CheckInsideRoots("model_path", r.model_dir, allowed_roots));
  DGPTQ_RETURN_IF_ERROR(CheckInsideRoots("output_path", r.out_dir, allowed_roots));
  if (!r.calib_path.empty()) {
    DGPTQ_RETURN_IF_ERROR(CheckInsideRoots("calibration.path", r.calib_path, allowed_roots));
  }
  DGPTQ_RETURN_IF_ERROR(CheckModelDir(r.model_dir));
  DGPTQ_ASSIGN_OR_RETURN(const Plan plan,
                         PlanCheckpoint(r.model_dir, r.num_workers, PlanSamples(r)));
  v.num_layers = static_cast<int>(plan.layers.size());
  std::error_code ec;
  if (!r.rtn && !fs::exists(r.calib_path, ec)) {
    return absl::NotFoundError(
        absl::StrCat("JobSpec.calibration.path '", r.calib_path, "' does not exist"));
  }
  DGPTQ_RETURN_IF_ERROR(CheckOutputDir(r));
  return v;
}

}  // namespace dgptq::coordinator
