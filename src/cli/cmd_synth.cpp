// Placeholder registration for `sparge synth`; replaced by the real command.
#include "cli/commands.hpp"
#include "common/error.hpp"

namespace sparge::cli {
void register_synth(CLI::App& app, Context&) {
  auto* sub = app.add_subcommand("synth", "(not built yet)");
  sub->callback([] { fail(ExitCode::kSoftware, "sparge synth is not implemented yet"); });
}
}  // namespace sparge::cli
