// /metrics of the real daemons after a real job: `promtool check metrics` finds nothing on
// either, the values tell what happened, and a real Prometheus scrapes both.
#include <fstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/observability/observability_test_util.h"

namespace dgptq::observability {
namespace {

bool Exists(const char* path) { return ::access(path, X_OK) == 0; }

using Metrics = Cluster;

TEST_F(Metrics, PassPromtoolAndCountTheJob) {
  if (!Exists(kPromtool)) GTEST_SKIP() << kPromtool << " is missing (Debian package prometheus)";
  StartWorker();
  const v1::Job job = WaitDone(Submit(Spec("out", 1)), 45s);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.reason();
  v1::GetJobRequest missing;
  missing.set_job_id("no-such-job");
  v1::Job unused;
  grpc::ClientContext ctx;
  EXPECT_EQ(stub_->GetJob(&ctx, missing, &unused).error_code(), grpc::StatusCode::NOT_FOUND);

  const std::vector<Sample> c = ScrapeUntil(
      coordinator_,
      [](const std::vector<Sample>& s) {
        return Value(s, "dgptq_coordinator_workers", {{"state", "idle"}}) == 1 &&
               Value(s, "dgptq_coordinator_worker_heartbeat_age_seconds").has_value();
      },
      5s);
  // Linted once every series is there (the heartbeat age appears asynchronously).
  for (const Daemon* d : {&coordinator_, &workers_[0]}) {
    const HttpResponse r = HttpGet(d->metrics_port, "/metrics");
    ASSERT_EQ(r.status, 200);
    const ProcOutput lint = PromtoolCheckMetrics(r.body, tmp_.path());
    EXPECT_EQ(lint.code, 0) << lint.output;
    EXPECT_EQ(lint.output, "") << r.body;
  }

  EXPECT_EQ(Value(c, "dgptq_build_info", {{"component", "coordinator"}}), 1);
  EXPECT_EQ(Value(c, "dgptq_coordinator_jobs_finished_total", {{"result", "succeeded"}}), 1);
  EXPECT_EQ(Value(c, "dgptq_coordinator_jobs_finished_total", {{"result", "failed"}}), 0);
  EXPECT_EQ(Value(c, "dgptq_coordinator_jobs", {{"state", "succeeded"}}), 1);
  EXPECT_EQ(Value(c, "dgptq_coordinator_jobs", {{"state", "running"}}), 0);
  EXPECT_EQ(Value(c, "dgptq_coordinator_queue_depth"), 0);
  EXPECT_EQ(Value(c, "dgptq_coordinator_job_duration_seconds_count"), 1);
  EXPECT_GT(Value(c, "dgptq_coordinator_job_duration_seconds_sum").value_or(0), 0);
  EXPECT_EQ(Value(c, "dgptq_coordinator_phase_duration_seconds_count", {{"phase", "plan"}}), 1);
  // One write (and one load) per layer of the 2-layer model on the one rank.
  EXPECT_EQ(Value(c, "dgptq_coordinator_phase_duration_seconds_count", {{"phase", "write"}}), 2);
  EXPECT_EQ(Value(c, "dgptq_coordinator_phase_duration_seconds_count", {{"phase", "load"}}), 2);
  EXPECT_EQ(Value(c, "dgptq_coordinator_workers_registered"), 1);
  EXPECT_EQ(Value(c, "dgptq_coordinator_workers", {{"state", "idle"}}), 1);
  EXPECT_EQ(Value(c, "dgptq_coordinator_workers", {{"state", "busy"}}), 0);
  const std::optional<double> age =
      Value(c, "dgptq_coordinator_worker_heartbeat_age_seconds", {{"worker", "w0"}});
  ASSERT_TRUE(age.has_value());
  EXPECT_LT(*age, 5);
  EXPECT_EQ(
      Value(c, "dgptq_coordinator_api_requests_total", {{"method", "SubmitJob"}, {"code", "OK"}}),
      1);
  EXPECT_EQ(Value(c, "dgptq_coordinator_api_requests_total",
                  {{"method", "GetJob"}, {"code", "NOT_FOUND"}}),
            1);
  EXPECT_GE(Value(c, "dgptq_coordinator_api_requests_total",
                  {{"method", "RegisterWorker"}, {"code", "OK"}})
                .value_or(0),
            1);

  const std::vector<Sample> w = Scrape(workers_[0]);
  EXPECT_EQ(Value(w, "dgptq_build_info", {{"component", "worker"}}), 1);
  EXPECT_EQ(Value(w, "dgptq_worker_modules_quantized_total"), 14);  // 7 per layer
  EXPECT_EQ(Value(w, "dgptq_worker_layers_done_total"), 2);
  EXPECT_EQ(Value(w, "dgptq_worker_jobs_total", {{"result", "ok"}}), 1);
  EXPECT_EQ(Value(w, "dgptq_worker_busy"), 0);

  // A worker that leaves takes its heartbeat series with it.
  workers_[0].proc->Signal(SIGTERM);
  EXPECT_EQ(workers_[0].proc->Wait(10s), 0);
  const std::vector<Sample> after = ScrapeUntil(
      coordinator_,
      [](const std::vector<Sample>& s) {
        return Value(s, "dgptq_coordinator_workers_registered") == 0;
      },
      10s);
  EXPECT_EQ(Value(after, "dgptq_coordinator_workers_registered"), 0);
  EXPECT_FALSE(Value(after, "dgptq_coordinator_worker_heartbeat_age_seconds").has_value());
}

// Runs Prometheus against the two daemons; Stop() ends it.
class PrometheusServer {
 public:
  PrometheusServer(const std::string& dir, const std::vector<std::pair<std::string, int>>& jobs)
      : port_(FreePort()) {
    const std::string config = dir + "/prometheus.yml";
    std::ofstream f(config);
    f << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
      << "scrape_configs:\n";
    for (const auto& [job, port] : jobs) {
      f << "  - job_name: " << job << "\n    static_configs:\n"
        << "      - targets: ['127.0.0.1:" << port << "']\n";
    }
    f.close();
    proc_ = std::make_unique<Subprocess>(
        std::vector<std::string>{kPrometheus, "--config.file=" + config,
                                 "--web.listen-address=127.0.0.1:" + std::to_string(port_),
                                 "--storage.tsdb.path=" + dir + "/tsdb", "--log.level=warn"},
        dir + "/prometheus.log");
  }
  ~PrometheusServer() { Stop(); }
  int Stop() {
    proc_->Signal(SIGTERM);
    return proc_->Wait(20s);
  }
  std::string Log() const { return proc_->Log(); }

  // The value of the single series `query` returns, once Prometheus has one; nullopt when
  // none arrived within `limit`.
  std::optional<double> WaitForValue(const std::string& query, std::chrono::seconds limit) {
    for (auto end = std::chrono::steady_clock::now() + limit;
         std::chrono::steady_clock::now() < end; std::this_thread::sleep_for(250ms)) {
      const HttpResponse r = HttpGet(port_, "/api/v1/query?query=" + UrlEncode(query));
      if (r.status != 200) continue;
      const nlohmann::json j = nlohmann::json::parse(r.body, nullptr, false);
      if (j.is_discarded() || j.value("status", "") != "success") continue;
      const nlohmann::json& result = j["data"]["result"];
      if (result.size() == 1) return std::stod(result[0]["value"][1].get<std::string>());
    }
    return std::nullopt;
  }

 private:
  int port_;
  std::unique_ptr<Subprocess> proc_;
};

TEST_F(Metrics, RealPrometheusScrapesBothDaemons) {
  if (!Exists(kPrometheus))
    GTEST_SKIP() << kPrometheus << " is missing (Debian package prometheus)";
  Daemon& worker = StartWorker();
  PrometheusServer prom(tmp_.path(), {{"dgptq-coordinator", coordinator_.metrics_port},
                                      {"dgptq-worker", worker.metrics_port}});
  const v1::Job job = WaitDone(Submit(Spec("out", 1)), 45s);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.reason();

  EXPECT_EQ(prom.WaitForValue(R"(up{job="dgptq-coordinator"} == 1)", 30s), 1) << prom.Log();
  EXPECT_EQ(prom.WaitForValue(R"(up{job="dgptq-worker"} == 1)", 5s), 1);
  // Counters as they stand after the job (earlier scrapes may hold lower values).
  EXPECT_EQ(
      prom.WaitForValue(R"(dgptq_coordinator_jobs_finished_total{result="succeeded"} == 1)", 30s),
      1);
  EXPECT_EQ(prom.WaitForValue(R"(dgptq_worker_layers_done_total == 2)", 30s), 2);
  EXPECT_EQ(prom.WaitForValue(R"(dgptq_coordinator_workers_registered == 1)", 5s), 1);
  EXPECT_EQ(prom.Stop(), 0) << prom.Log();
}

}  // namespace
}  // namespace dgptq::observability
