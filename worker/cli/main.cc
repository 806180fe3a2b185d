// `dgptq`: the command-line entry point. Flags are parsed here (and in the
// subcommand registration functions) and nowhere below.
#include <cstdio>
#include <vector>

#include "worker/cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"dgptq: distributed GPTQ quantization for large language models"};
  app.require_subcommand(1);
  const std::vector<dgptq::cli::Command> commands = {
      dgptq::cli::AddQuantizeCommand(app),
      dgptq::cli::AddEvalCommand(app),
      dgptq::cli::AddMakeModelCommand(app),
      dgptq::cli::AddQuantizeModuleCommand(app),
      dgptq::cli::AddConvertCommand(app),
      dgptq::cli::AddSubmitCommand(app),
      dgptq::cli::AddWatchCommand(app),
      dgptq::cli::AddStatusCommand(app),
      dgptq::cli::AddListCommand(app),
      dgptq::cli::AddCancelCommand(app),
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return dgptq::cli::kExitUsage;
  }
  for (const auto& c : commands) {
    if (c.app->parsed()) return c.run();
  }
  return dgptq::cli::kExitUsage;
}
