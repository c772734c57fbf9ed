// Placeholder registration for `sparge config`; replaced by the real command.
#include "cli/commands.hpp"
#include "common/error.hpp"

namespace sparge::cli {
void register_config(CLI::App& app, Context&) {
  auto* sub = app.add_subcommand("config", "(not built yet)");
  sub->callback([] { fail(ExitCode::kSoftware, "sparge config is not implemented yet"); });
}
}  // namespace sparge::cli
