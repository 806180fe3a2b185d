// Entry point of fuzz_job_spec, shared with its corpus replay
// (tests/coordinator/job_spec_fuzz_corpus_test.cc); the same contract as fuzz_entry.h:
// the parser's status, or Internal when an accepted spec breaks a promise.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "common/model_config.h"
#include "common/token_data.h"
#include "coordinator/job_validation.h"
#include "coordinator/planner.h"
#include "dgptq/v1/job.pb.h"
#include "google/protobuf/stubs/logging.h"
#include "proto/job_spec.h"

namespace dgptq::fuzz {

// Internal naming the first range ResolveJobSpec promises that `r` breaks.
inline absl::Status CheckResolved(const ResolvedJobSpec& r) {
  if (r.model_dir.empty() || r.out_dir.empty()) return absl::InternalError("empty path accepted");
  for (const std::string* path : {&r.model_dir, &r.out_dir, &r.calib_path}) {
    if (path->size() > kMaxPathBytes || path->find('\0') != std::string::npos) {
      return absl::InternalError("over-long path or NUL byte accepted");
    }
  }
  if (!r.quant.Validate().ok()) return absl::InternalError("invalid quantization accepted");
  if (!r.rtn && r.calib_path.empty()) return absl::InternalError("GPTQ without data accepted");
  if (r.samples < 1 || r.samples > kMaxCalibrationSamples || r.seq_len < 1 ||
      r.seq_len > (1 << 20)) {
    return absl::InternalError("calibration sizes out of range accepted");
  }
  if (r.num_workers < 1 || r.num_workers > kMaxJobWorkers ||
      (!r.rtn && r.num_workers > r.samples)) {
    return absl::InternalError("num_workers out of range accepted");
  }
  if (!v1::DeviceKind_IsValid(r.device_kind)) return absl::InternalError("device kind accepted");
  if (r.format != "gptq" && r.format != "compressed-tensors") {
    return absl::InternalError("unknown format");
  }
  if (r.format == "gptq" && !r.quant.sym) return absl::InternalError("asym GPTQ accepted");
  return absl::OkStatus();
}

// Input: a serialized dgptq.v1.JobSpec (what SubmitJobRequest.spec carries; the request adds
// only an opaque request_id). A spec that ResolveJobSpec accepts must keep its ranges and
// pass ValidateJob's filesystem-free step: MakePlan of a small Llama on its num_workers
// and PlanSamples succeeds with one non-empty sample shard per rank.
inline absl::Status FuzzJobSpec(const uint8_t* data, size_t size) {
  v1::JobSpec spec;
  const google::protobuf::LogSilencer quiet;  // libprotobuf logs each string that is not UTF-8
  if (!spec.ParseFromArray(data, static_cast<int>(size))) {
    return absl::InvalidArgumentError("not a JobSpec");
  }
  absl::StatusOr<ResolvedJobSpec> r = ResolveJobSpec(spec);
  if (!r.ok()) return r.status();
  if (absl::Status s = CheckResolved(*r); !s.ok()) return s;
  static const ModelConfig kModel = [] {
    absl::StatusOr<ModelConfig> c = ParseModelConfig(
        R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 172,
            "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 4,
            "vocab_size": 512})",
        "fuzz model");
    if (!c.ok()) std::abort();  // the literal above is wrong
    return *c;
  }();
  const int64_t samples = coordinator::PlanSamples(*r);
  absl::StatusOr<coordinator::Plan> plan = coordinator::MakePlan(kModel, r->num_workers, samples);
  if (!plan.ok())
    return absl::InternalError("a resolved spec does not plan: " + plan.status().ToString());
  if (static_cast<int>(plan->shards.size()) != r->num_workers) {
    return absl::InternalError("one shard per rank expected");
  }
  int64_t next = 0;
  for (const coordinator::SampleShard& s : plan->shards) {
    if (s.begin != next || s.end <= s.begin) return absl::InternalError("shards do not tile");
    next = s.end;
  }
  if (next != samples) return absl::InternalError("shards miss samples");
  return absl::OkStatus();
}

}  // namespace dgptq::fuzz
