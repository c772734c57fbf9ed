// Placeholder registration for `sparge devices`; replaced by the real command.
#include "cli/commands.hpp"
#include "common/error.hpp"

namespace sparge::cli {
void register_devices(CLI::App& app, Context&) {
  auto* sub = app.add_subcommand("devices", "(not built yet)");
  sub->callback([] { fail(ExitCode::kSoftware, "sparge devices is not implemented yet"); });
}
}  // namespace sparge::cli
