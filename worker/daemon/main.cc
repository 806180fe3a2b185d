// `dgptq-worker`: the GPU (or CPU) worker daemon. See worker_daemon.h.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <thread>

#include "CLI/CLI.hpp"
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

  // SIGINT/SIGTERM: the handler writes to a pipe and a thread asks the daemon to stop
  // (threads created before main, like OpenBLAS's, may receive the signal, so it is
  // handled rather than blocked and waited for).
  static int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return 1;
  struct sigaction sa {};
  sa.sa_handler = [](int sig) {
    const char c = static_cast<char>(sig);
    [[maybe_unused]] ssize_t n = ::write(pipe_fds[1], &c, 1);
  };
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  dgptq::worker::WorkerDaemon daemon(o);
  std::thread signals([&] {
    char sig = 0;
    if (::read(pipe_fds[0], &sig, 1) == 1) {
      spdlog::info("dgptq-worker: signal {}, shutting down", static_cast<int>(sig));
      daemon.Shutdown();
    }
  });
  signals.detach();
  const absl::Status s = daemon.Run();
  if (!s.ok()) {
    std::fprintf(stderr, "dgptq-worker: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
