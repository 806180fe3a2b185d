// The coordinator daemon as a child process over a durable state directory (issue 6), for
// the tests that kill it and start it again.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "tests/cluster_util.h"

namespace dgptq::testing {

// Starts DGPTQ_COORDINATOR_BIN on 127.0.0.1:`port` (0: any free one) with --state-dir
// `dir`/state, a 5 s lease and heartbeats every 0.5 s, no metrics, logging to
// `dir`/coordinator.log; its port is 0 when it did not start within 10 s.
inline Daemon StartDurableCoordinator(const std::string& dir, int port) {
  return StartDaemon({DGPTQ_COORDINATOR_BIN, "--listen", "127.0.0.1:" + std::to_string(port),
                      "--state-dir", dir + "/state", "--lease-ttl", "5",
                      "--heartbeat-interval", "0.5"},
                     dir, "coordinator", std::chrono::seconds(10));
}

}  // namespace dgptq::testing
