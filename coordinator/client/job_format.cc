#include "coordinator/client/job_format.h"

#include <algorithm>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "coordinator/client/coordinator_client.h"
#include "google/protobuf/util/json_util.h"

namespace dgptq::client {
namespace {

std::string LayersCell(const v1::Job& job) {
  if (job.num_layers() == 0) return "-";
  return absl::StrCat(job.layers_done(), "/", job.num_layers());
}

std::string TimeCell(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S %Z", ToTime(t), absl::LocalTimeZone());
}

}  // namespace

std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  // Only an Any of an unknown type fails to print; our messages hold none.
  if (!status.ok()) return absl::StrCat("{\"jsonError\":\"", message.GetTypeName(), "\"}");
  return json;
}

std::string StateName(v1::JobState state) {
  const std::string& name = v1::JobState_Name(state);
  if (name.empty()) return absl::StrCat(static_cast<int>(state));
  return std::string(absl::StripPrefix(name, "JOB_STATE_"));
}

std::string PhaseName(v1::Phase phase) {
  if (phase == v1::PHASE_UNSPECIFIED) return "";
  const std::string& name = v1::Phase_Name(phase);
  if (name.empty()) return absl::StrCat(static_cast<int>(phase));
  return absl::AsciiStrToLower(absl::StripPrefix(name, "PHASE_"));
}

absl::Time ToTime(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

std::string ShortDuration(absl::Duration d) {
  const int64_t s = std::max<int64_t>(0, absl::ToInt64Seconds(d));
  if (s < 60) return absl::StrFormat("%ds", s);
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  if (s < 86400) return absl::StrFormat("%dh%02dm", s / 3600, s / 60 % 60);
  return absl::StrFormat("%dd%02dh", s / 86400, s / 3600 % 24);
}

std::string JobTable(const google::protobuf::RepeatedPtrField<v1::Job>& jobs, absl::Time now) {
  std::vector<std::vector<std::string>> rows = {
      {"JOB", "STATE", "LAYERS", "WORKERS", "AGE", "MODEL"}};
  for (const v1::Job& job : jobs) {
    const int workers =
        job.worker_ids_size() > 0 ? job.worker_ids_size() : std::max(1, job.spec().num_workers());
    rows.push_back({job.job_id(), StateName(job.state()), LayersCell(job), absl::StrCat(workers),
                    ShortDuration(now - ToTime(job.create_time())), job.spec().model_path()});
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      absl::StrAppend(&line, row[c], std::string(width[c] - row[c].size() + 2, ' '));
    }
    absl::StrAppend(&out, absl::StripTrailingAsciiWhitespace(line), "\n");
  }
  return out;
}

std::string JobSummary(const v1::Job& job) {
  std::string out =
      absl::StrFormat("job:      %s\nstate:    %s\n", job.job_id(), StateName(job.state()));
  if (!job.reason().empty()) absl::StrAppend(&out, "reason:   ", job.reason(), "\n");
  absl::StrAppend(&out, "model:    ", job.spec().model_path(), "\n");
  absl::StrAppend(&out, "output:   ", job.spec().output_path(), "\n");
  if (job.worker_ids_size() > 0) {
    absl::StrAppend(&out, "workers:  ", absl::StrJoin(job.worker_ids(), ", "), "\n");
  }
  absl::StrAppend(&out, "layers:   ", LayersCell(job), "\n");
  absl::StrAppend(&out, "created:  ", TimeCell(job.create_time()), "\n");
  absl::StrAppend(&out, "updated:  ", TimeCell(job.update_time()), "\n");
  absl::StrAppend(&out, "events:   ", job.event_count(), "\n");
  return out;
}

void LayerEta::Observe(int layer, int num_layers, absl::Time time) {
  num_layers_ = num_layers;
  if (first_layer_ < 0) {
    first_layer_ = layer_ = layer;
    first_start_ = layer_start_ = last_seen_ = time;
    return;
  }
  last_seen_ = std::max(last_seen_, time);
  if (layer > layer_) {
    layer_ = layer;
    layer_start_ = time;
  }
}

std::optional<absl::Duration> LayerEta::Remaining() const {
  if (layer_ <= first_layer_) return std::nullopt;
  const absl::Duration per_layer = (layer_start_ - first_start_) / (layer_ - first_layer_);
  const absl::Duration left = per_layer * (num_layers_ - layer_) - (last_seen_ - layer_start_);
  return std::max(left, absl::ZeroDuration());
}

void WatchPrinter::OnEvent(const v1::JobEvent& event) {
  if (json_) {
    std::fprintf(out_, "%s\n", ToJson(event).c_str());
    std::fflush(out_);
    return;
  }
  if (event.has_state_change()) {
    const v1::StateChange& c = event.state_change();
    state_ = c.to_state();
    std::string line = StateName(c.to_state());
    if (c.from_state() != v1::JOB_STATE_UNSPECIFIED) {
      line = absl::StrCat(StateName(c.from_state()), " -> ", line);
    }
    if (!c.reason().empty()) absl::StrAppend(&line, ": ", c.reason());
    PrintLine(line);
  } else if (event.has_progress()) {
    progress_ = event.progress();
    eta_.Observe(progress_.layer(), progress_.num_layers(), ToTime(event.time()));
  } else if (event.has_error()) {
    const v1::ErrorDetail& e = event.error();
    PrintLine(absl::StrFormat("%s (%s): %s [code %d]", e.fatal() ? "fatal error" : "error",
                              e.rank() < 0 ? "coordinator" : absl::StrCat("rank ", e.rank()),
                              e.message(), e.code()));
  }
  if (!IsTerminal(state_)) DrawBar();
}

void WatchPrinter::PrintLine(const std::string& line) {
  std::fprintf(out_, "%s%s\n", bar_shown_ ? "\r\033[K" : "", line.c_str());
  bar_shown_ = false;
  std::fflush(out_);
}

void WatchPrinter::DrawBar() {
  constexpr int kWidth = 24;
  const int n = progress_.num_layers();
  const int layer = n > 0 ? std::min(progress_.layer() + 1, n) : 0;
  std::string bar(n > 0 ? static_cast<size_t>(layer * kWidth / n) : 0, '#');
  bar.resize(kWidth, '.');
  std::string line = absl::StrFormat("[%s] %-9s", bar, StateName(state_));
  if (n > 0) {
    absl::StrAppendFormat(&line, " layer %d/%d %-9s %-24s", layer, n, PhaseName(progress_.phase()),
                          progress_.module());
  }
  if (auto left = eta_.Remaining()) absl::StrAppend(&line, " ETA ", ShortDuration(*left));
  std::fprintf(out_, "\r\033[K%s", line.c_str());
  bar_shown_ = true;
  std::fflush(out_);
}

void WatchPrinter::EndLine() {
  if (!bar_shown_) return;
  std::fprintf(out_, "\n");
  bar_shown_ = false;
  std::fflush(out_);
}

void WatchPrinter::Finish(const v1::Job& job) {
  if (json_) {
    std::fprintf(out_, "%s\n", ToJson(job).c_str());
  } else {
    std::string line = absl::StrCat("job ", job.job_id(), " ", StateName(job.state()));
    if (!job.reason().empty()) absl::StrAppend(&line, ": ", job.reason());
    PrintLine(line);
  }
  std::fflush(out_);
}

}  // namespace dgptq::client
