// Placeholder registration for `sparge eval`; replaced by the real command.
#include "cli/commands.hpp"
#include "common/error.hpp"

namespace sparge::cli {
void register_eval(CLI::App& app, Context&) {
  auto* sub = app.add_subcommand("eval", "(not built yet)");
  sub->callback([] { fail(ExitCode::kSoftware, "sparge eval is not implemented yet"); });
}
}  // namespace sparge::cli
