// Placeholder registration for `sparge tune`; replaced by the real command.
#include "cli/commands.hpp"
#include "common/error.hpp"

namespace sparge::cli {
void register_tune(CLI::App& app, Context&) {
  auto* sub = app.add_subcommand("tune", "(not built yet)");
  sub->callback([] { fail(ExitCode::kSoftware, "sparge tune is not implemented yet"); });
}
}  // namespace sparge::cli
