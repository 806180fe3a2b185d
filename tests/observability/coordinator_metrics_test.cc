// CoordinatorMetrics on its own (served on loopback, driven through its interface) and the
// coordinator's metrics flags. A separate executable from observability_tests: this one links
// the coordinator (and so gRPC's reflection library), that one generated reflection stubs.
#include "coordinator/metrics.h"
#include "gtest/gtest.h"
#include "tests/observability/observability_test_util.h"

namespace dgptq::observability {
namespace {

using coordinator::CoordinatorMetrics;
using coordinator::WorkerSample;

class CoordinatorMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(metrics_->Serve("127.0.0.1:0").ok());
    ASSERT_GT(metrics_->port(), 0);
  }
  std::vector<Sample> Scrape() {
    const HttpResponse r = HttpGet(metrics_->port(), "/metrics");
    EXPECT_EQ(r.status, 200);
    text_ = r.body;
    return ParseMetrics(r.body);
  }

  std::unique_ptr<CoordinatorMetrics> metrics_ = CoordinatorMetrics::Create("1.2.3");
  std::string text_;
};

TEST_F(CoordinatorMetricsTest, ServesOnceAndNotOnABoundPort) {
  EXPECT_EQ(metrics_->Serve("127.0.0.1:0").code(), absl::StatusCode::kFailedPrecondition);
  auto other = CoordinatorMetrics::Create("1.2.3");
  EXPECT_FALSE(other->Serve("127.0.0.1:" + std::to_string(metrics_->port())).ok());
  EXPECT_EQ(other->port(), 0);
}

TEST_F(CoordinatorMetricsTest, JobStatesMoveBetweenGaugesAndTerminalOnesCount) {
  const std::vector<Sample> fresh = Scrape();
  for (const char* state : {"queued", "planning", "running", "succeeded", "failed", "cancelled"}) {
    EXPECT_EQ(Value(fresh, "dgptq_coordinator_jobs", {{"state", state}}), 0) << state;
  }
  EXPECT_EQ(Value(fresh, "dgptq_build_info", {{"component", "coordinator"}, {"version", "1.2.3"}}),
            1);
  metrics_->JobTransition(v1::JOB_STATE_UNSPECIFIED, v1::JOB_STATE_QUEUED, absl::ZeroDuration());
  metrics_->JobTransition(v1::JOB_STATE_UNSPECIFIED, v1::JOB_STATE_QUEUED, absl::ZeroDuration());
  EXPECT_EQ(Value(Scrape(), "dgptq_coordinator_queue_depth"), 2);
  metrics_->JobTransition(v1::JOB_STATE_QUEUED, v1::JOB_STATE_CANCELLED, absl::Seconds(1));
  metrics_->JobTransition(v1::JOB_STATE_QUEUED, v1::JOB_STATE_PLANNING, absl::Seconds(2));
  metrics_->JobTransition(v1::JOB_STATE_PLANNING, v1::JOB_STATE_RUNNING, absl::Seconds(3));
  const std::vector<Sample> running = Scrape();
  EXPECT_EQ(Value(running, "dgptq_coordinator_queue_depth"), 0);
  EXPECT_EQ(Value(running, "dgptq_coordinator_jobs", {{"state", "running"}}), 1);
  EXPECT_EQ(Value(running, "dgptq_coordinator_jobs", {{"state", "planning"}}), 0);
  metrics_->JobTransition(v1::JOB_STATE_RUNNING, v1::JOB_STATE_FAILED, absl::Seconds(40));
  const std::vector<Sample> s = Scrape();
  EXPECT_EQ(Value(s, "dgptq_coordinator_jobs", {{"state", "running"}}), 0);
  EXPECT_EQ(Value(s, "dgptq_coordinator_jobs", {{"state", "failed"}}), 1);
  EXPECT_EQ(Value(s, "dgptq_coordinator_jobs", {{"state", "cancelled"}}), 1);
  EXPECT_EQ(Value(s, "dgptq_coordinator_jobs_finished_total", {{"result", "failed"}}), 1);
  EXPECT_EQ(Value(s, "dgptq_coordinator_jobs_finished_total", {{"result", "cancelled"}}), 1);
  EXPECT_EQ(Value(s, "dgptq_coordinator_jobs_finished_total", {{"result", "succeeded"}}), 0);
  EXPECT_EQ(Value(s, "dgptq_coordinator_job_duration_seconds_count"), 2);
  EXPECT_EQ(Value(s, "dgptq_coordinator_job_duration_seconds_sum"), 41);
  EXPECT_EQ(Value(s, "dgptq_coordinator_job_duration_seconds_bucket", {{"le", "30"}}), 1);
}

TEST_F(CoordinatorMetricsTest, PhasesRequestsAndWorkers) {
  metrics_->Planned(absl::Milliseconds(20));
  metrics_->RankPhase(v1::PHASE_REDUCE, absl::Milliseconds(500));
  metrics_->RankPhase(v1::PHASE_UNSPECIFIED, absl::Seconds(1));  // not a phase: dropped
  metrics_->ApiRequest("GetJob", absl::StatusCode::kNotFound);
  metrics_->Workers({{"a", true, absl::Seconds(1)}, {"b", false, absl::Seconds(2)}});
  std::vector<Sample> s = Scrape();
  EXPECT_EQ(Value(s, "dgptq_coordinator_phase_duration_seconds_count", {{"phase", "plan"}}), 1);
  EXPECT_EQ(Value(s, "dgptq_coordinator_phase_duration_seconds_sum", {{"phase", "reduce"}}), 0.5);
  EXPECT_EQ(Value(s, "dgptq_coordinator_phase_duration_seconds_count", {{"phase", "forward"}}), 0);
  EXPECT_FALSE(Value(s, "dgptq_coordinator_phase_duration_seconds_count", {{"phase", ""}}));
  EXPECT_EQ(Value(s, "dgptq_coordinator_api_requests_total",
                  {{"method", "GetJob"}, {"code", "NOT_FOUND"}}),
            1);
  EXPECT_EQ(
      Value(s, "dgptq_coordinator_api_requests_total", {{"method", "SubmitJob"}, {"code", "OK"}}),
      0);
  EXPECT_EQ(Value(s, "dgptq_coordinator_workers", {{"state", "busy"}}), 1);
  EXPECT_EQ(Value(s, "dgptq_coordinator_workers", {{"state", "idle"}}), 1);
  EXPECT_EQ(Value(s, "dgptq_coordinator_workers_registered"), 2);
  EXPECT_EQ(Value(s, "dgptq_coordinator_worker_heartbeat_age_seconds", {{"worker", "a"}}), 1);
  EXPECT_EQ(Value(s, "dgptq_coordinator_worker_heartbeat_age_seconds", {{"worker", "b"}}), 2);
  if (::access(kPromtool, X_OK) == 0) {
    dgptq::testing::TempDir tmp;
    const ProcOutput lint = PromtoolCheckMetrics(text_, tmp.path());
    EXPECT_EQ(lint.code, 0) << lint.output;
    EXPECT_EQ(lint.output, "");
  }

  metrics_->Workers({{"b", false, absl::Seconds(3)}});
  s = Scrape();
  EXPECT_FALSE(Value(s, "dgptq_coordinator_worker_heartbeat_age_seconds", {{"worker", "a"}}));
  EXPECT_EQ(Value(s, "dgptq_coordinator_worker_heartbeat_age_seconds", {{"worker", "b"}}), 3);
  EXPECT_EQ(Value(s, "dgptq_coordinator_workers_registered"), 1);
  EXPECT_EQ(Value(s, "dgptq_coordinator_workers", {{"state", "busy"}}), 0);
}

TEST(CoordinatorMetricsFlags, PortFileWithoutMetricsExitsTwoAndABoundPortExitsOne) {
  dgptq::testing::TempDir tmp;
  Subprocess no_metrics({DGPTQ_COORDINATOR_BIN, "--listen", "127.0.0.1:0", "--metrics-listen", "",
                         "--metrics-port-file", tmp / "mp"},
                        tmp / "log1");
  EXPECT_EQ(no_metrics.Wait(10s), 2) << no_metrics.Log();
  EXPECT_NE(no_metrics.Log().find("--metrics-port-file"), std::string::npos);

  auto taken = CoordinatorMetrics::Create("x");
  ASSERT_TRUE(taken->Serve("127.0.0.1:0").ok());
  Subprocess clash({DGPTQ_COORDINATOR_BIN, "--listen", "127.0.0.1:0", "--metrics-listen",
                    "127.0.0.1:" + std::to_string(taken->port())},
                   tmp / "log2");
  EXPECT_EQ(clash.Wait(10s), 1) << clash.Log();
}

}  // namespace
}  // namespace dgptq::observability
