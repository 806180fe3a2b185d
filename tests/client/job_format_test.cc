// Output of the client commands: enum names, JSON lines, the job table, the ETA estimate and
// both modes of the watch printer.
#include "coordinator/client/job_format.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dgptq::client {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Everything written to a FILE*, read back when the object dies or on Text().
class CapturedFile {
 public:
  CapturedFile() : file_(open_memstream(&buf_, &size_)) {}
  ~CapturedFile() {
    std::fclose(file_);
    std::free(buf_);
  }
  std::FILE* file() { return file_; }
  std::string Text() {
    std::fflush(file_);
    return std::string(buf_, size_);
  }

 private:
  char* buf_ = nullptr;
  size_t size_ = 0;
  std::FILE* file_;
};

v1::JobEvent At(int64_t index, absl::Duration since_start) {
  v1::JobEvent e;
  e.set_index(index);
  e.set_job_id("j-1");
  const absl::Time t = absl::FromUnixSeconds(1700000000) + since_start;
  e.mutable_time()->set_seconds(absl::ToUnixSeconds(t));
  return e;
}

v1::JobEvent StateChange(int64_t index, v1::JobState from, v1::JobState to,
                         const std::string& reason) {
  v1::JobEvent e = At(index, absl::ZeroDuration());
  e.mutable_state_change()->set_from_state(from);
  e.mutable_state_change()->set_to_state(to);
  e.mutable_state_change()->set_reason(reason);
  return e;
}

v1::JobEvent Progress(int64_t index, int layer, absl::Duration since_start) {
  v1::JobEvent e = At(index, since_start);
  v1::Progress* p = e.mutable_progress();
  p->set_layer(layer);
  p->set_num_layers(4);
  p->set_phase(v1::PHASE_QUANTIZE);
  p->set_module("self_attn.q_proj");
  return e;
}

v1::Job CancelledJob() {
  v1::Job job;
  job.set_job_id("j-1");
  job.set_state(v1::JOB_STATE_CANCELLED);
  job.set_reason("cancelled by user");
  return job;
}

TEST(JobFormatTest, Names) {
  EXPECT_EQ(StateName(v1::JOB_STATE_QUEUED), "QUEUED");
  EXPECT_EQ(StateName(v1::JOB_STATE_CANCELLED), "CANCELLED");
  EXPECT_EQ(StateName(static_cast<v1::JobState>(42)), "42");
  EXPECT_EQ(PhaseName(v1::PHASE_FORWARD), "forward");
  EXPECT_EQ(PhaseName(v1::PHASE_UNSPECIFIED), "");
}

TEST(JobFormatTest, ShortDuration) {
  EXPECT_EQ(ShortDuration(absl::Seconds(45)), "45s");
  EXPECT_EQ(ShortDuration(absl::Seconds(187)), "3m07s");
  EXPECT_EQ(ShortDuration(absl::Hours(2) + absl::Minutes(5)), "2h05m");
  EXPECT_EQ(ShortDuration(absl::Hours(76)), "3d04h");
  EXPECT_EQ(ShortDuration(-absl::Seconds(5)), "0s");
}

TEST(JobFormatTest, JsonIsOneLineWithZeroFieldsPrinted) {
  v1::Job job;
  job.set_job_id("j-1");
  job.set_state(v1::JOB_STATE_QUEUED);
  const std::string json = ToJson(job);
  EXPECT_EQ(json.find('\n'), std::string::npos);
  EXPECT_THAT(json, HasSubstr("\"jobId\":\"j-1\""));
  EXPECT_THAT(json, HasSubstr("\"state\":\"JOB_STATE_QUEUED\""));
  EXPECT_THAT(json, HasSubstr("\"layersDone\":0"));
  // The first event has index 0, which must still appear.
  EXPECT_THAT(ToJson(At(0, absl::ZeroDuration())), HasSubstr("\"index\":\"0\""));
}

TEST(JobFormatTest, TableHasAHeaderAndAlignedColumns) {
  google::protobuf::RepeatedPtrField<v1::Job> jobs;
  v1::Job* a = jobs.Add();
  a->set_job_id("j-1");
  a->set_state(v1::JOB_STATE_RUNNING);
  a->set_layers_done(3);
  a->set_num_layers(32);
  a->add_worker_ids("w-1");
  a->add_worker_ids("w-2");
  a->mutable_spec()->set_model_path("/models/llama");
  a->mutable_create_time()->set_seconds(1700000000);
  v1::Job* b = jobs.Add();
  b->set_job_id("job-long-id-2");
  b->set_state(v1::JOB_STATE_QUEUED);
  const std::string table = JobTable(jobs, absl::FromUnixSeconds(1700000000 + 187));
  const std::vector<std::string> lines = absl::StrSplit(table, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_THAT(lines[0], ::testing::StartsWith("JOB "));
  EXPECT_THAT(lines[1], HasSubstr("RUNNING"));
  EXPECT_THAT(lines[1], HasSubstr("3/32"));
  EXPECT_THAT(lines[1], HasSubstr("3m07s"));
  EXPECT_THAT(lines[1], HasSubstr("/models/llama"));
  EXPECT_EQ(lines[0].find("STATE"), lines[1].find("RUNNING"));
  EXPECT_EQ(lines[0].find("STATE"), lines[2].find("QUEUED"));
}

TEST(JobFormatTest, SummaryShowsReason) {
  const std::string s = JobSummary(CancelledJob());
  EXPECT_THAT(s, HasSubstr("state:    CANCELLED\n"));
  EXPECT_THAT(s, HasSubstr("reason:   cancelled by user\n"));
}

TEST(LayerEtaTest, RateFromLayerStarts) {
  LayerEta eta;
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  eta.Observe(0, 10, t0);
  EXPECT_FALSE(eta.Remaining().has_value());
  eta.Observe(0, 10, t0 + absl::Seconds(5));
  EXPECT_FALSE(eta.Remaining().has_value());
  eta.Observe(1, 10, t0 + absl::Seconds(10));
  eta.Observe(2, 10, t0 + absl::Seconds(20));
  // 10 s per layer; layers 2..9 (eight) remain.
  EXPECT_EQ(eta.Remaining(), absl::Seconds(80));
  eta.Observe(2, 10, t0 + absl::Seconds(24));  // 4 s into layer 2
  EXPECT_EQ(eta.Remaining(), absl::Seconds(76));
  eta.Observe(1, 10, t0 + absl::Seconds(25));  // a slower rank still on layer 1
  EXPECT_EQ(eta.Remaining(), absl::Seconds(75));
}

TEST(WatchPrinterTest, JsonModePrintsOneEventPerLineThenTheJob) {
  CapturedFile out;
  WatchPrinter printer(out.file(), /*json=*/true);
  printer.OnEvent(StateChange(0, v1::JOB_STATE_UNSPECIFIED, v1::JOB_STATE_QUEUED, ""));
  printer.OnEvent(
      StateChange(1, v1::JOB_STATE_QUEUED, v1::JOB_STATE_CANCELLED, "cancelled by user"));
  printer.Finish(CancelledJob());
  const std::vector<std::string> lines = absl::StrSplit(out.Text(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_THAT(lines[0], HasSubstr("\"index\":\"0\""));
  EXPECT_THAT(lines[1], HasSubstr("\"toState\":\"JOB_STATE_CANCELLED\""));
  EXPECT_THAT(lines[2], HasSubstr("\"state\":\"JOB_STATE_CANCELLED\""));
  EXPECT_THAT(out.Text(), Not(HasSubstr("\r")));
}

TEST(WatchPrinterTest, TerminalModeDrawsABarAndPrintsStateChanges) {
  CapturedFile out;
  WatchPrinter printer(out.file(), /*json=*/false);
  printer.OnEvent(StateChange(0, v1::JOB_STATE_UNSPECIFIED, v1::JOB_STATE_QUEUED, ""));
  printer.OnEvent(StateChange(1, v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING, ""));
  printer.OnEvent(Progress(2, 0, absl::Seconds(0)));
  printer.OnEvent(Progress(3, 1, absl::Seconds(30)));
  const std::string bar = out.Text();
  EXPECT_THAT(bar, ::testing::StartsWith("QUEUED\n"));
  EXPECT_THAT(bar, HasSubstr("QUEUED -> RUNNING\n"));
  EXPECT_THAT(bar, HasSubstr("[############............] RUNNING   layer 2/4 quantize"));
  EXPECT_THAT(bar, HasSubstr("self_attn.q_proj"));
  EXPECT_THAT(bar, HasSubstr("ETA 1m30s"));  // 30 s per layer, layers 1..3 left
  printer.OnEvent(
      StateChange(4, v1::JOB_STATE_RUNNING, v1::JOB_STATE_CANCELLED, "cancelled by user"));
  printer.Finish(CancelledJob());
  const std::string text = out.Text();
  EXPECT_THAT(text, HasSubstr("\r\033[KRUNNING -> CANCELLED: cancelled by user\n"));
  EXPECT_THAT(text, ::testing::EndsWith("job j-1 CANCELLED: cancelled by user\n"));
}

}  // namespace
}  // namespace dgptq::client
