// Subcommands of the `dgptq` binary. Each registers its flags on `app` and returns
// the function main() runs when the subcommand is chosen; it returns the exit code
// (0 ok, 1 failure, 2 usage).
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

Command AddQuantizeModuleCommand(CLI::App& app);
Command AddQuantizeCommand(CLI::App& app);
Command AddEvalCommand(CLI::App& app);
Command AddMakeModelCommand(CLI::App& app);
Command AddConvertCommand(CLI::App& app);

}  // namespace dgptq::cli
