// `dgptq-worker`: the GPU (or CPU) worker daemon. See worker_daemon.h.

#include <cstdio>
#include <thread>

#include "CLI/CLI.hpp"
#include "common/channel_flags.h"
#include "common/daemon_util.h"
#include "spdlog/spdlog.h"
#include "worker/daemon/worker_daemon.h"

int main(int argc, char** argv) {
  dgptq::worker::WorkerDaemonOptions o;
  std::string device = "cpu", log_level = "info";
  double comm_timeout_s = 300;
  CLI::App app{"dgptq-worker: runs ranks of dgptq quantization jobs for a coordinator"};
  app.add_option("--coordinator", o.coordinator, "coordinator address host:port")->required();
  app.add_option("--name", o.name, "worker name (default hostname:pid)");
  app.add_option("--device", device, "cpu or cuda");
  app.add_option("--gpu", o.gpu, "CUDA device ordinal");
  app.add_option("--threads", o.cpu_threads, "CPU backend threads (0: all cores)");
  app.add_option("--host", o.host, "address other workers reach this one at");
  app.add_option("--comm-timeout", comm_timeout_s, "seconds a collective may take");
  app.add_option("--listen", o.listen, "gRPC address (Worker, health, reflection); '' for none");
  app.add_option("--metrics-listen", o.metrics_listen, "Prometheus /metrics address; '' for none");
  app.add_option("--port-file", o.port_file, "write the bound gRPC port here");
  app.add_option("--metrics-port-file", o.metrics_port_file, "write the bound metrics port here");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error");
  dgptq::AddChannelSecurityFlags(&app, &o.coordinator_tls, &o.token_file,
                                 "file holding the worker bearer token");
  CLI11_PARSE(app, argc, argv);
  auto kind = dgptq::kernels::ParseDeviceKind(device);
  if (!kind.ok()) {
    std::fprintf(stderr, "dgptq-worker: %s\n", kind.status().ToString().c_str());
    return 2;
  }
  if (comm_timeout_s <= 0) {
    std::fprintf(stderr, "dgptq-worker: --comm-timeout must be positive\n");
    return 2;
  }
  o.device = *kind;
  o.comm_timeout = absl::Seconds(comm_timeout_s);
  spdlog::set_level(spdlog::level::from_str(log_level));

  dgptq::InstallStopSignalHandlers();
  dgptq::worker::WorkerDaemon daemon(o);
  std::thread signals([&] {
    const int sig = dgptq::WaitForStopSignal();
    spdlog::info("dgptq-worker: signal {}, shutting down", sig);
    daemon.Shutdown();
  });
  signals.detach();
  const absl::Status s = daemon.Run();
  if (!s.ok()) {
    std::fprintf(stderr, "dgptq-worker: %s\n", s.ToString().c_str());
    return absl::IsInvalidArgument(s) ? 2 : 1;  // bad flags or unusable TLS / token files
  }
  return 0;
}
