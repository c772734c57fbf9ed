// Placeholder registration for `sparge inspect`; replaced by the real command.
#include "cli/commands.hpp"
#include "common/error.hpp"

namespace sparge::cli {
void register_inspect(CLI::App& app, Context&) {
  auto* sub = app.add_subcommand("inspect", "(not built yet)");
  sub->callback([] { fail(ExitCode::kSoftware, "sparge inspect is not implemented yet"); });
}
}  // namespace sparge::cli
