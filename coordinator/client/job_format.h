// How the `dgptq` client commands print jobs and events: JSON (protobuf's canonical JSON mapping,
// one object per line) for scripts, and tables and a progress bar for a terminal.
#pragma once

#include <cstdio>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "dgptq/v1/job.pb.h"
#include "google/protobuf/message.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "google/protobuf/timestamp.pb.h"

namespace dgptq::client {

// `message` in protobuf's JSON mapping on one line (lowerCamelCase names, enum names, int64 as
// strings), with zero-valued scalar fields printed so every Job line has the same keys.
std::string ToJson(const google::protobuf::Message& message);

// "QUEUED", "CANCELLED", ... (the enum name without its JOB_STATE_ prefix).
std::string StateName(v1::JobState state);
// "forward", "quantize", ...; "" for PHASE_UNSPECIFIED.
std::string PhaseName(v1::Phase phase);
absl::Time ToTime(const google::protobuf::Timestamp& t);
// "45s", "3m07s", "2h05m", "3d04h" (whole seconds, negative as 0s).
std::string ShortDuration(absl::Duration d);

// A table with a header row: job id, state, layers done / total, workers, age at `now`, model
// path. Columns are padded to the widest cell; every line ends with '\n'.
std::string JobTable(const google::protobuf::RepeatedPtrField<v1::Job>& jobs, absl::Time now);
// "key: value" lines describing one job (reason and workers only when set).
std::string JobSummary(const v1::Job& job);

// Time left for a job, from the rate at which decoder layers start. Ranks advance through a
// layer together (they synchronise on its Hessian reduce), so the highest layer reported by any
// rank is the job's position.
class LayerEta {
 public:
  // `layer` (0-based) of `num_layers` is in progress at `time` (the event's coordinator time, so
  // a replayed log gives the rate the job really had).
  void Observe(int layer, int num_layers, absl::Time time);
  // Remaining time at the last observation; nullopt until two different layers were seen.
  std::optional<absl::Duration> Remaining() const;

 private:
  int first_layer_ = -1, layer_ = -1, num_layers_ = 0;
  absl::Time first_start_, layer_start_, last_seen_;
};

// Prints a WatchJob stream to `out`. JSON mode: one JobEvent per line, then the final Job.
// Terminal mode: a one-line bar (state, layer x/N, phase, module, ETA) redrawn in place, state
// changes and errors on lines of their own, and a final "job <id> <STATE>[: reason]" line.
class WatchPrinter {
 public:
  WatchPrinter(std::FILE* out, bool json) : out_(out), json_(json) {}
  void OnEvent(const v1::JobEvent& event);
  void Finish(const v1::Job& job);
  // Ends a bar line in progress, before something else is printed to the terminal.
  void EndLine();

 private:
  void PrintLine(const std::string& line);  // above the bar
  void DrawBar();

  std::FILE* out_;
  bool json_;
  bool bar_shown_ = false;
  v1::JobState state_ = v1::JOB_STATE_UNSPECIFIED;
  v1::Progress progress_;
  LayerEta eta_;
};

}  // namespace dgptq::client
