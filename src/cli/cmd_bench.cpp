// Placeholder registration for `sparge bench`; replaced by the real command.
#include "cli/commands.hpp"
#include "common/error.hpp"

namespace sparge::cli {
void register_bench(CLI::App& app, Context&) {
  auto* sub = app.add_subcommand("bench", "(not built yet)");
  sub->callback([] { fail(ExitCode::kSoftware, "sparge bench is not implemented yet"); });
}
}  // namespace sparge::cli
