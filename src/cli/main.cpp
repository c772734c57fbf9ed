// sparge command-line entry point: global flags, subcommands, and the single place where
// exceptions become exit codes.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "cli/commands.hpp"
#include "common/error.hpp"
#include "common/io_guard.hpp"
#include "common/log.hpp"
#include "common/progress.hpp"
#include "common/version.hpp"
#include "runtime/cuda_oracle.hpp"

namespace {

constexpr const char* kFooter = R"(Exit codes:
  0   success
  1   ran, but a check failed (budget missed, regression found)
  2   usage error (bad flags or arguments)
  65  bad input data (corrupt/truncated file, wrong shapes, NaN/Inf, unknown schema)
  66  input file missing or unreadable
  69  no CUDA device, or the requested kernel is not compiled in
  70  internal or CUDA error
  74  cannot write an output file
  78  invalid config file (tuned YAML, bench suite)

Run `sparge <command> --help` for the options of one command.)";

}  // namespace

int main(int argc, char** argv) {
  using namespace sparge;
  CLI::App app{
      "sparge: calibrate, benchmark and deploy SpargeAttn block-sparse quantized attention.\n"
      "Typical flow: capture Q/K/V to HDF5 (python/sparge_capture) -> `sparge tune` -> tuned YAML\n"
      "-> `sparge eval` on held-out samples -> `sparge bench` -> `sparge report` in CI.",
      "sparge"};
  app.footer(kFooter);
  app.set_version_flag("--version", std::string(SPARGE_VERSION_STRING));
  app.require_subcommand(1);

  int verbose = 0;
  bool quiet = false;
  bool no_progress = false;
  app.add_flag("-v,--verbose", verbose, "More log output on stderr (-vv for trace)");
  app.add_flag("-q,--quiet", quiet, "Only warnings and errors on stderr");
  app.add_flag("--no-progress", no_progress, "Never draw a progress bar");
  app.parse_complete_callback([&] {
    if (quiet) log::set_level(log::Level::kWarn);
    if (verbose == 1) log::set_level(log::Level::kDebug);
    if (verbose >= 2) log::set_level(log::Level::kTrace);
    Progress::set_globally_disabled(no_progress || quiet);
  });

  // Oracle backends beyond the built-in "cpu": `--backend cuda` of tune and eval.
  runtime::register_cuda_oracle();

  cli::Context ctx;
  cli::register_devices(app, ctx);
  cli::register_inspect(app, ctx);
  cli::register_synth(app, ctx);
  cli::register_tune(app, ctx);
  cli::register_merge(app, ctx);
  cli::register_eval(app, ctx);
  cli::register_bench(app, ctx);
  cli::register_report(app, ctx);
  cli::register_config(app, ctx);

  // Every subcommand's --help ends with the exit codes, after its own footer if it has one.
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    const std::string own = sub->get_footer();
    if (own.find("Exit codes:") == std::string::npos)
      sub->footer(own.empty() ? std::string(kFooter) : own + "\n\n" + kFooter);
  }

  try {
    app.parse(argc, argv);
    flush_stdout_or_fail();  // a result that did not reach stdout is a failed command
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help / --version
  } catch (const CLI::ParseError& e) {
    // One line like every other error; CLI11's own codes (100+) are remapped to 2.
    std::string what = e.what();
    const auto extra = app.remaining();
    bool ran_command = false;
    for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
      ran_command |= sub->parsed();
    if (!ran_command && !extra.empty() && !extra.front().empty() && extra.front()[0] != '-') {
      std::vector<std::string> names;
      for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
        names.push_back(sub->get_name());
      what =
          fmt::format("unknown command '{}' (commands: {})", extra.front(), fmt::join(names, ", "));
    }
    fmt::print(stderr, "sparge: error: {} (see --help)\n", what);
    return static_cast<int>(ExitCode::kUsage);
  } catch (const Error& e) {
    fmt::print(stderr, "sparge: error: {}\n", e.what());
    return static_cast<int>(e.code());
  } catch (const std::exception& e) {
    fmt::print(stderr, "sparge: internal error: {}\n", e.what());
    return static_cast<int>(ExitCode::kSoftware);
  }
  return ctx.exit_code;
}
