// Real daemon processes on loopback for the process-level tests: one way to start a
// dgptq-coordinator or dgptq-worker, find its ports and stop it, shared by the service,
// restart, observability, security and load tests.
#pragma once

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "tests/subprocess.h"

namespace dgptq::testing {

// A daemon process and the ports it bound (0: not up within the limit, or not served).
struct Daemon {
  std::unique_ptr<Subprocess> proc;
  int port = 0;
  int metrics_port = 0;
  std::string address() const { return "127.0.0.1:" + std::to_string(port); }
};

inline bool HasFlag(const std::vector<std::string>& argv, const std::string& flag) {
  return std::find(argv.begin(), argv.end(), flag) != argv.end();
}

// Starts `argv` (a daemon binary and its flags), logging to `dir`/`name`.log. Adds
// `--listen 127.0.0.1:0` unless argv has --listen, `--port-file dir/name.port`, and either
// `--metrics-listen ""` (no /metrics) or, when argv has --metrics-listen, a metrics port
// file. Waits up to `limit` for the ports.
inline Daemon StartDaemon(std::vector<std::string> argv, const std::string& dir,
                          const std::string& name,
                          std::chrono::seconds limit = std::chrono::seconds(20)) {
  const std::string port_file = dir + "/" + name + ".port";
  const std::string metrics_file = dir + "/" + name + ".metrics-port";
  std::filesystem::remove(port_file);
  std::filesystem::remove(metrics_file);
  if (!HasFlag(argv, "--listen")) argv.insert(argv.end(), {"--listen", "127.0.0.1:0"});
  const bool metrics = HasFlag(argv, "--metrics-listen");
  if (metrics) {
    argv.insert(argv.end(), {"--metrics-port-file", metrics_file});
  } else {
    argv.insert(argv.end(), {"--metrics-listen", ""});
  }
  argv.insert(argv.end(), {"--port-file", port_file});
  Daemon d;
  d.proc = std::make_unique<Subprocess>(std::move(argv), dir + "/" + name + ".log");
  d.port = WaitForPortFile(port_file, limit);
  if (metrics && d.port > 0) d.metrics_port = WaitForPortFile(metrics_file, std::chrono::seconds(2));
  return d;
}

// The argv of a CPU worker of `coordinator` named `name` (one BLAS thread, so workers sharing
// this machine stay deterministic; a 60 s communicator timeout), plus `extra`.
inline std::vector<std::string> WorkerArgv(const std::string& worker_bin,
                                           const std::string& coordinator,
                                           const std::string& name,
                                           const std::vector<std::string>& extra = {}) {
  std::vector<std::string> argv{worker_bin, "--coordinator", coordinator, "--name", name,
                                "--threads", "1", "--comm-timeout", "60"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

// SIGTERM to the workers, then to the coordinator; prints every log when `failed`.
inline void StopDaemons(Daemon* coordinator, std::vector<Daemon>* workers, bool failed) {
  for (Daemon& w : *workers) w.proc->Signal(SIGTERM);
  for (Daemon& w : *workers) w.proc->Wait(std::chrono::seconds(10));
  if (coordinator->proc) {
    coordinator->proc->Signal(SIGTERM);
    coordinator->proc->Wait(std::chrono::seconds(10));
  }
  if (!failed) return;
  if (coordinator->proc) std::printf("--- coordinator log:\n%s\n", coordinator->proc->Log().c_str());
  for (size_t i = 0; i < workers->size(); ++i) {
    std::printf("--- worker %zu log:\n%s\n", i, (*workers)[i].proc->Log().c_str());
  }
}

}  // namespace dgptq::testing
