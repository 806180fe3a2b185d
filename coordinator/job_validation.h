// SubmitJob's checks beyond ResolveJobSpec: paths on shared storage and the checkpoint's
// headers (through the tensor-free planner). Pure functions over the filesystem; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dgptq/v1/job.pb.h"
#include "proto/job_spec.h"

namespace dgptq::coordinator {

// A spec that passed ValidateJob.
struct ValidatedJob {
  ResolvedJobSpec spec;
  int num_layers = 0;  // decoder layers of the model
};

// Checks `spec` in this order, returning the first failure:
//  - ResolveJobSpec: InvalidArgument naming the field;
//  - with `allowed_roots` non-empty, model_path, output_path and calibration.path must lie
//    inside one root after resolving symlinks and ".." (CheckInsideRoots): PermissionDenied;
//  - model_path or its config.json missing: NotFound naming the path;
//  - PlanCheckpoint(model, num_workers, PlanSamples): its InvalidArgument (unknown
//    model_type, weight missing or misshapen) and NotFound (no safetensors) pass through;
//  - calibration.path missing (non-rtn jobs): NotFound;
//  - output_path equal to model_path: InvalidArgument; output_path not a directory, or
//    holding config.json or *.safetensors without `overwrite`: FailedPrecondition.
absl::StatusOr<ValidatedJob> ValidateJob(const v1::JobSpec& spec,
                                         const std::vector<std::string>& allowed_roots);

// OK if `path` (which need not exist: its nearest existing ancestor is resolved) lies inside
// one of `roots` once symlinks and ".." are resolved, or if `roots` is empty. PermissionDenied
// naming `field`, the path, what it resolves to, and the roots otherwise.
absl::Status CheckInsideRoots(const std::string& field, const std::string& path,
                              const std::vector<std::string>& roots);

// True when `dir` holds config.json or a *.safetensors file (what a finished job leaves).
bool HoldsModel(const std::string& dir);

// Calibration samples the planner splits: the spec's, and for rtn jobs (which forward no
// samples) at least one per rank so the planner accepts any world size.
int64_t PlanSamples(const ResolvedJobSpec& spec);

}  // namespace dgptq::coordinator
