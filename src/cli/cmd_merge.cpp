// `sparge merge PART.yaml... -o OUT.yaml`: join the configs of `sparge tune --shard i/n` jobs.
#include <fmt/format.h>

#include "cli/commands.hpp"
#include "common/io_guard.hpp"
#include "common/log.hpp"
#include "config/tuned.hpp"

namespace sparge::cli {

void register_merge(CLI::App& app, Context&) {
  struct Args {
    std::vector<std::string> parts;
    std::string output;
    bool allow_partial = false;
  };
  auto args = std::make_shared<Args>();
  auto* sub = app.add_subcommand(
      "merge",
      "Join the tuned configs of `sparge tune --shard i/n` jobs (one per task of a job array) into "
      "one config, equal to a single-machine run. Every part must come from the same dump, "
      "samples, kernel, budget and search flags, and together be shards 0..N-1 of one `--shard "
      "I/N` split; a missing, foreign or repeated shard or a layer in two parts is an error "
      "(exit 78) unless --allow-partial.\n"
      "Example: for i in 0 1 2 3; do sparge tune calib.h5 --shard $i/4 -o part$i.yaml; done\n"
      "         sparge merge part*.yaml -o tuned.yaml");
  sub->add_option("parts", args->parts, "Tuned configs of the shards (YAML)")->required();
  sub->add_option("-o,--output", args->output, "Merged config (YAML, written atomically)")
      ->required();
  sub->add_flag("--allow-partial", args->allow_partial,
                "Merge an incomplete or inconsistent set of shards (missing, foreign or "
                "unrecorded shard), with a warning; the result lacks those layers");
  sub->callback([args] {
    refuse_output_over_input({"-o", args->output}, {args->parts.begin(), args->parts.end()});
    std::vector<config::TunedConfig> parts;
    for (const auto& p : args->parts) parts.push_back(config::read_tuned(p));
    const config::TunedConfig merged = config::merge_tuned(parts, args->parts, args->allow_partial);
    config::write_tuned(args->output, merged);
    log::info("merged {} parts, {} layers into {}", parts.size(), merged.layers.size(),
              args->output);
  });
}

}  // namespace sparge::cli
