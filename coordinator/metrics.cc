#include "coordinator/metrics.h"

#include <map>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "common/metrics_http.h"
#include "common/status_macros.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace dgptq::coordinator {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

// Label values of dgptq_coordinator_jobs{state}, indexed by v1::JobState.
const std::map<v1::JobState, std::string>& StateLabels() {
  static const auto* labels = new std::map<v1::JobState, std::string>{
      {v1::JOB_STATE_QUEUED, "queued"},   {v1::JOB_STATE_PLANNING, "planning"},
      {v1::JOB_STATE_RUNNING, "running"}, {v1::JOB_STATE_SUCCEEDED, "succeeded"},
      {v1::JOB_STATE_FAILED, "failed"},   {v1::JOB_STATE_CANCELLED, "cancelled"}};
  return *labels;
}

bool IsTerminal(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_CANCELLED;
}

// Progress.phase -> the phase label.
const char* PhaseLabel(v1::Phase phase) {
  switch (phase) {
    case v1::PHASE_LOAD:
      return "load";
    case v1::PHASE_FORWARD:
      return "forward";
    case v1::PHASE_REDUCE:
      return "reduce";
    case v1::PHASE_QUANTIZE:
      return "quantize";
    case v1::PHASE_BROADCAST:
      return "broadcast";
    case v1::PHASE_WRITE:
      return "write";
    case v1::PHASE_HESSIAN:
      return "hessian";
    default:
      return nullptr;
  }
}

// Jobs take seconds (tests) to hours (8B models on CPUs); a layer's phase milliseconds to
// minutes.
const prometheus::Histogram::BucketBoundaries kJobBuckets = {
    1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400};
const prometheus::Histogram::BucketBoundaries kPhaseBuckets = {
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};

const char* const kMethods[] = {"SubmitJob", "GetJob",         "ListJobs",  "WatchJob",
                                "CancelJob", "RegisterWorker", "Heartbeat", "Control"};

class Metrics final : public CoordinatorMetrics {
 public:
  explicit Metrics(const std::string& version)
      : registry_(std::make_shared<prometheus::Registry>()),
        jobs_(BuildGauge()
                  .Name("dgptq_coordinator_jobs")
                  .Help("Jobs in each state")
                  .Register(*registry_)),
        finished_(BuildCounter()
                      .Name("dgptq_coordinator_jobs_finished_total")
                      .Help("Jobs that reached a terminal state, by result")
                      .Register(*registry_)),
        queue_(BuildGauge()
                   .Name("dgptq_coordinator_queue_depth")
                   .Help("Jobs waiting in the queue (QUEUED)")
                   .Register(*registry_)
                   .Add({})),
        job_seconds_(BuildHistogram()
                         .Name("dgptq_coordinator_job_duration_seconds")
                         .Help("Time from submission to the terminal state of each job")
                         .Register(*registry_)
                         .Add({}, kJobBuckets)),
        phase_seconds_(BuildHistogram()
                           .Name("dgptq_coordinator_phase_duration_seconds")
                           .Help("Duration of planning and of each rank's pipeline phases "
                                 "per layer")
                           .Register(*registry_)),
        workers_(BuildGauge()
                     .Name("dgptq_coordinator_workers")
                     .Help("Registered workers, idle or busy")
                     .Register(*registry_)),
        registered_(BuildGauge()
                        .Name("dgptq_coordinator_workers_registered")
                        .Help("Registered workers")
                        .Register(*registry_)
                        .Add({})),
        heartbeat_age_(BuildGauge()
                           .Name("dgptq_coordinator_worker_heartbeat_age_seconds")
                           .Help("Time since each worker last renewed its lease")
                           .Register(*registry_)),
        requests_(BuildCounter()
                      .Name("dgptq_coordinator_api_requests_total")
                      .Help("Coordinator RPCs handled, by method and gRPC status code")
                      .Register(*registry_)) {
    BuildGauge()
        .Name("dgptq_build_info")
        .Help("Build of this daemon")
        .Register(*registry_)
        .Add({{"component", "coordinator"}, {"version", version}})
        .Set(1);
    for (const auto& [state, label] : StateLabels()) {
      jobs_.Add({{"state", label}});
      if (IsTerminal(state)) finished_.Add({{"result", label}});
    }
    phase_seconds_.Add({{"phase", "plan"}}, kPhaseBuckets);
    for (int p = v1::PHASE_LOAD; p <= v1::PHASE_HESSIAN; ++p) {
      if (const char* label = PhaseLabel(static_cast<v1::Phase>(p))) {
        phase_seconds_.Add({{"phase", label}}, kPhaseBuckets);
      }
    }
    for (const char* state : {"idle", "busy"}) workers_.Add({{"state", state}});
    for (const char* method : kMethods) requests_.Add({{"method", method}, {"code", "OK"}});
  }

  absl::Status Serve(const std::string& address) override {
    if (http_ != nullptr) return absl::FailedPreconditionError("metrics are already served");
    DGPTQ_ASSIGN_OR_RETURN(http_, MetricsHttpServer::Start(address, registry_));
    return absl::OkStatus();
  }
  int port() const override { return http_ == nullptr ? 0 : http_->port(); }

  void JobTransition(v1::JobState from, v1::JobState to, absl::Duration age) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = StateLabels().find(from); it != StateLabels().end()) {
      jobs_.Add({{"state", it->second}}).Decrement();
    }
    auto it = StateLabels().find(to);
    if (it == StateLabels().end()) return;
    jobs_.Add({{"state", it->second}}).Increment();
    queue_.Set(jobs_.Add({{"state", "queued"}}).Value());
    if (IsTerminal(to)) {
      finished_.Add({{"result", it->second}}).Increment();
      job_seconds_.Observe(absl::ToDoubleSeconds(age));
    }
  }

  void Planned(absl::Duration elapsed) override {
    phase_seconds_.Add({{"phase", "plan"}}, kPhaseBuckets).Observe(absl::ToDoubleSeconds(elapsed));
  }

  void RankPhase(v1::Phase phase, absl::Duration elapsed) override {
    const char* label = PhaseLabel(phase);
    if (label == nullptr) return;
    phase_seconds_.Add({{"phase", label}}, kPhaseBuckets).Observe(absl::ToDoubleSeconds(elapsed));
  }

  void Workers(const std::vector<WorkerSample>& workers) override {
    std::lock_guard<std::mutex> lock(mu_);
    int busy = 0;
    std::map<std::string, double> ages;  // a name twice (a misconfiguration): the older lease
    for (const WorkerSample& w : workers) {
      busy += w.busy;
      double& age = ages[w.name];
      age = std::max(age, absl::ToDoubleSeconds(w.heartbeat_age));
    }
    workers_.Add({{"state", "busy"}}).Set(busy);
    workers_.Add({{"state", "idle"}}).Set(static_cast<double>(workers.size()) - busy);
    registered_.Set(static_cast<double>(workers.size()));
    for (auto it = ages_.begin(); it != ages_.end();) {
      if (ages.count(it->first) == 0) {
        heartbeat_age_.Remove(it->second);
        it = ages_.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& [name, age] : ages) {
      prometheus::Gauge*& g = ages_[name];
      if (g == nullptr) g = &heartbeat_age_.Add({{"worker", name}});
      g->Set(age);
    }
  }

  void ApiRequest(std::string_view method, absl::StatusCode code) override {
    requests_.Add({{"method", std::string(method)}, {"code", absl::StatusCodeToString(code)}})
        .Increment();
  }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<MetricsHttpServer> http_;
  std::mutex mu_;  // makes each update of several series one step
  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Family<prometheus::Counter>& finished_;
  prometheus::Gauge& queue_;
  prometheus::Histogram& job_seconds_;
  prometheus::Family<prometheus::Histogram>& phase_seconds_;
  prometheus::Family<prometheus::Gauge>& workers_;
  prometheus::Gauge& registered_;
  prometheus::Family<prometheus::Gauge>& heartbeat_age_;
  std::map<std::string, prometheus::Gauge*> ages_ ABSL_GUARDED_BY(mu_);
  prometheus::Family<prometheus::Counter>& requests_;
};

}  // namespace

std::unique_ptr<CoordinatorMetrics> CoordinatorMetrics::Create(const std::string& version) {
  return std::make_unique<Metrics>(version);
}

}  // namespace dgptq::coordinator
