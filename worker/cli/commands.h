// Subcommands of the `dgptq` binary. Each registers its flags on `app` and returns
// the function main() runs when the subcommand is chosen; it returns the exit code
// (0 ok, 1 failure, 2 usage; the coordinator client commands add 3 and 4).
#pragma once

#include <functional>

#include "CLI/CLI.hpp"

namespace dgptq::cli {

using Runner = std::function<int()>;
struct Command {
  CLI::App* app;
  Runner run;
};

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;
// Coordinator client commands: the job was cancelled (submit --wait, watch).
inline constexpr int kExitCancelled = 3;
// Coordinator client commands: the coordinator did not answer (UNAVAILABLE or
// DEADLINE_EXCEEDED after the connect deadline and retries).
inline constexpr int kExitUnreachable = 4;

Command AddQuantizeModuleCommand(CLI::App& app);
Command AddQuantizeCommand(CLI::App& app);
Command AddEvalCommand(CLI::App& app);
Command AddMakeModelCommand(CLI::App& app);
Command AddConvertCommand(CLI::App& app);

// Clients of a coordinator daemon (coordinator/client/client_commands.cc).
Command AddSubmitCommand(CLI::App& app);
Command AddWatchCommand(CLI::App& app);
Command AddStatusCommand(CLI::App& app);
Command AddListCommand(CLI::App& app);
Command AddCancelCommand(CLI::App& app);

}  // namespace dgptq::cli
