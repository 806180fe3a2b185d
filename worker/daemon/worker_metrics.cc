#include "worker/daemon/worker_metrics.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "absl/strings/str_format.h"
#include "common/metrics_http.h"
#include "common/status_macros.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace dgptq::worker {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

int64_t ResidentBytes() {
  std::ifstream f("/proc/self/statm");
  long pages = 0, resident = 0;
  if (!(f >> pages >> resident)) return 0;
  return static_cast<int64_t>(resident) * ::sysconf(_SC_PAGESIZE);
}

class Metrics final : public WorkerMetrics {
 public:
  Metrics(std::shared_ptr<prometheus::Registry> registry, const std::string& version)
      : registry_(std::move(registry)),
        busy_(BuildGauge().Name("dgptq_worker_busy")
                  .Help("1 while this worker runs a rank of a job")
                  .Register(*registry_).Add({})),
        jobs_(BuildCounter().Name("dgptq_worker_jobs_total")
                  .Help("Ranks of jobs this worker finished, by result")
                  .Register(*registry_)),
        layers_(BuildCounter().Name("dgptq_worker_layers_done_total")
                    .Help("Decoder layers this worker finished")
                    .Register(*registry_).Add({})),
        modules_(BuildCounter().Name("dgptq_worker_modules_quantized_total")
                     .Help("Linear modules this worker quantized")
                     .Register(*registry_).Add({})),
        phase_(BuildCounter().Name("dgptq_worker_phase_seconds_total")
                   .Help("Wall time spent per pipeline phase")
                   .Register(*registry_)),
        bytes_(BuildCounter().Name("dgptq_worker_communicated_bytes_total")
                   .Help("Communicator bytes sent plus received, by backend and phase")
                   .Register(*registry_)),
        loss_(BuildHistogram().Name("dgptq_worker_gptq_loss")
                  .Help("GPTQ loss of each quantized module (Hessian-weighted squared error)")
                  .Register(*registry_)
                  .Add({}, prometheus::Histogram::BucketBoundaries{
                               1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100, 1e3, 1e4})),
        tokens_(BuildCounter().Name("dgptq_worker_calibration_tokens_total")
                    .Help("Calibration tokens forwarded through decoder layers")
                    .Register(*registry_).Add({})),
        device_peak_(BuildGauge().Name("dgptq_worker_device_memory_peak_bytes")
                         .Help("Peak device memory of the current or last job")
                         .Register(*registry_).Add({})),
        rss_(BuildGauge().Name("dgptq_worker_host_resident_memory_bytes")
                 .Help("Resident set size of the worker process")
                 .Register(*registry_).Add({})),
        rss_peak_(BuildGauge().Name("dgptq_worker_host_resident_memory_peak_bytes")
                      .Help("Peak resident set size of the worker process")
                      .Register(*registry_).Add({})) {
    BuildGauge().Name("dgptq_build_info").Help("Build of this daemon")
        .Register(*registry_).Add({{"component", "worker"}, {"version", version}}).Set(1);
    for (const char* r : {"ok", "failed", "cancelled"}) jobs_.Add({{"result", r}});
    SampleMemory();
  }

  void Serve(std::unique_ptr<MetricsHttpServer> http) { http_ = std::move(http); }
  int port() const override { return http_->port(); }
  void JobStarted() override {
    busy_.Set(1);
    device_peak_.Set(0);
  }
  void JobEnded(const std::string& result) override {
    busy_.Set(0);
    jobs_.Add({{"result", result}}).Increment();
    SampleMemory();
  }
  void Progress(const ProgressEvent& e, const std::string& backend) override {
    if (e.phase == "quantize" && !e.module.empty()) {
      modules_.Increment();
      loss_.Observe(e.loss);
      return;
    }
    phase_.Add({{"phase", e.phase}}).Increment(e.seconds);
    if (e.bytes > 0) {
      bytes_.Add({{"backend", backend}, {"phase", e.phase}}).Increment(static_cast<double>(e.bytes));
    }
    if (e.tokens > 0) tokens_.Increment(static_cast<double>(e.tokens));
    if (e.peak_device_bytes > 0) device_peak_.Set(static_cast<double>(e.peak_device_bytes));
    if (e.phase == "write" && e.layer >= 0) layers_.Increment();
    SampleMemory();
  }
  void SampleMemory() override {
    rss_.Set(static_cast<double>(ResidentBytes()));
    rss_peak_.Set(static_cast<double>(PeakRssBytes()));
  }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<MetricsHttpServer> http_;
  prometheus::Gauge& busy_;
  prometheus::Family<prometheus::Counter>& jobs_;
  prometheus::Counter& layers_;
  prometheus::Counter& modules_;
  prometheus::Family<prometheus::Counter>& phase_;
  prometheus::Family<prometheus::Counter>& bytes_;
  prometheus::Histogram& loss_;
  prometheus::Counter& tokens_;
  prometheus::Gauge& device_peak_;
  prometheus::Gauge& rss_;
  prometheus::Gauge& rss_peak_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<WorkerMetrics>> WorkerMetrics::Start(const std::string& address,
                                                                    const std::string& version) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto metrics = std::make_unique<Metrics>(registry, version);
  DGPTQ_ASSIGN_OR_RETURN(auto http, MetricsHttpServer::Start(address, registry));
  metrics->Serve(std::move(http));
  return std::unique_ptr<WorkerMetrics>(std::move(metrics));
}

}  // namespace dgptq::worker
