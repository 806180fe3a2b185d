// Process plumbing shared by the two daemons.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace dgptq {

// Writes `port` and a newline to `path` through a temporary file and a rename, so a reader
// (a test or script that started the daemon on port 0) never sees a partial number.
// OK without doing anything when `path` is empty.
absl::Status WritePortFile(const std::string& path, int port);

// Installs SIGINT/SIGTERM handlers that only record the signal (through a pipe); call once,
// early in main. Handling rather than blocking the signals works whatever threads libraries
// started before main (OpenBLAS starts its pool at load time).
void InstallStopSignalHandlers();
// Blocks until SIGINT or SIGTERM arrives (after InstallStopSignalHandlers) and returns it.
int WaitForStopSignal();

}  // namespace dgptq
