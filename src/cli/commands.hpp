// Subcommand registration. Each subcommand lives in its own file (cmd_<name>.cpp), binds its
// options to a struct and sets a callback; main.cpp only wires them together and maps errors to
// exit codes.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/arg_lists.hpp"

namespace sparge::cli {

struct Context {
  int exit_code = 0;  // set by a command that ran but found a failed check (exit 1)
};

void register_devices(CLI::App& app, Context& ctx);
void register_inspect(CLI::App& app, Context& ctx);
void register_synth(CLI::App& app, Context& ctx);
void register_tune(CLI::App& app, Context& ctx);
void register_merge(CLI::App& app, Context& ctx);
void register_eval(CLI::App& app, Context& ctx);
void register_bench(CLI::App& app, Context& ctx);
void register_report(CLI::App& app, Context& ctx);
void register_config(CLI::App& app, Context& ctx);

}  // namespace sparge::cli
