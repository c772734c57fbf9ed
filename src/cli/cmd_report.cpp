// Placeholder registration for `sparge report`; replaced by the real command.
#include "cli/commands.hpp"
#include "common/error.hpp"

namespace sparge::cli {
void register_report(CLI::App& app, Context&) {
  auto* sub = app.add_subcommand("report", "(not built yet)");
  sub->callback([] { fail(ExitCode::kSoftware, "sparge report is not implemented yet"); });
}
}  // namespace sparge::cli
