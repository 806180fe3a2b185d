// The coordinator daemon as a child process over a durable state directory (issue 6), for
// the tests that kill it and start it again.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "tests/subprocess.h"

namespace dgptq::testing {

// Starts DGPTQ_COORDINATOR_BIN on 127.0.0.1:`*port` (0: any free one) with --state-dir
// `dir`/state, a 5 s lease and heartbeats every 0.5 s, no metrics, its output appended to
// `dir`/coordinator.log; sets `*port` to the port it serves on (0 when it did not start
// within 10 s).
inline std::unique_ptr<Subprocess> StartDurableCoordinator(const std::string& dir, int* port) {
  const std::string port_file = dir + "/coordinator.port";
  std::filesystem::remove(port_file);
  auto daemon = std::make_unique<Subprocess>(
      std::vector<std::string>{DGPTQ_COORDINATOR_BIN, "--listen",
                               "127.0.0.1:" + std::to_string(*port), "--metrics-listen", "",
                               "--port-file", port_file, "--state-dir", dir + "/state",
                               "--lease-ttl", "5", "--heartbeat-interval", "0.5"},
      dir + "/coordinator.log");
  *port = WaitForPortFile(port_file, std::chrono::seconds(10));
  return daemon;
}

}  // namespace dgptq::testing
