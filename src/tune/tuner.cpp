#include "tune/tuner.hpp"

#include <ATen/Parallel.h>
#include <c10/util/hash.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "common/error.hpp"
#include "common/log.hpp"
#include "common/parallel.hpp"
#include "common/progress.hpp"
#include "common/utc_time.hpp"
#include "common/version.hpp"
#include "io/dump.hpp"
#include "tune/content_hash.hpp"
#include "tune/journal.hpp"

namespace sparge::tune {

namespace {

// Each worker runs libtorch ops; their intra-op pool would multiply the threads by `jobs`.
int resolve_jobs(int requested, int units) {
  const int hw = std::max(1u, std::thread::hardware_concurrency());
  int jobs = requested > 0 ? requested : hw;
  jobs = std::max(1, std::min(jobs, std::max(1, units)));
  at::set_num_threads(std::max(1, hw / jobs));
  return jobs;
}

std::vector<int> select_samples(const io::DumpReader& reader, const io::LayerInfo& layer,
                                const std::optional<std::vector<int>>& wanted) {
  std::vector<int> have;
  for (const auto& s : layer.samples) have.push_back(s.index);
  if (!wanted) {
    if (have.empty()) {
      fail(ExitCode::kDataError, "{}: layer {} has no samples", reader.path().string(),
           layer.index);
    }
    return have;
  }
  for (int s : *wanted) {
    if (std::find(have.begin(), have.end(), s) == have.end()) {
      fail(ExitCode::kUsage, "--samples: {}: layer {} has no sample {}", reader.path().string(),
           layer.index, s);
    }
  }
  return *wanted;
}

// The one place tune and eval (and so the kernel self-check) read a head's samples: the token
// order is applied here, so every oracle backend predicts and runs on the permuted sequence
// (why comparing against the dense reference in permuted order is exact: token_order.hpp).
HeadRequest load_head(const io::DumpReader& reader, const io::LayerInfo& layer, int head,
                      const std::vector<int>& samples, const ref::Geometry& geometry,
                      const ref::AttentionOptions& attention, const TokenOrder& order) {
  // q: this query head; k, v: the KV head it reads under GQA/MQA (H % Hkv == 0 is checked by
  // the reader). Each [B, 1, N, D].
  const int group = layer.num_q_heads / std::max(1, layer.num_kv_heads);
  const int kv = head / std::max(1, group);
  HeadRequest req;
  req.layer = layer.index;
  req.head = head;
  req.geometry = geometry;
  req.attention = attention;
  for (int s : samples) {
    HeadSample hs;
    hs.q = reader.read(layer.index, s, "q", std::make_pair(head, head + 1));
    hs.k = reader.read(layer.index, s, "k", std::make_pair(kv, kv + 1));
    hs.v = reader.read(layer.index, s, "v", std::make_pair(kv, kv + 1));
    hs.q = permute_tokens(hs.q, order);
    hs.k = permute_tokens(hs.k, order);
    hs.v = permute_tokens(hs.v, order);
    req.samples.push_back(std::move(hs));
  }
  return req;
}

// A layer none of whose sequences is on the grid runs in natural order: say so once per layer.
void warn_off_grid(const io::DumpInfo& info, const std::vector<const io::LayerInfo*>& layers,
                   const TokenOrder& order) {
  for (const auto* l : layers) {
    if (l->samples.empty()) continue;
    const auto& s = l->samples.front();
    if (s.q_shape.size() == 4 && s.kv_shape.size() == 4 && s.q_shape[2] != order.tokens() &&
        s.kv_shape[2] != order.tokens()) {
      log::warn(
          "layer {}: {} query / {} key tokens, the grid of {} has {}: this layer is not "
          "permuted",
          l->index, s.q_shape[2], s.kv_shape[2], info.model_id, order.tokens());
    }
  }
}

nlohmann::json candidate_json(const Candidate& c) {
  return {{"mode", c.topk ? "topk" : "cdf"},
          {"tau", c.tau},
          {"theta", c.theta},
          {"lambda", std::isinf(c.lambda) ? nlohmann::json(nullptr) : nlohmann::json(c.lambda)}};
}

// The search's explored points: one object per evaluated candidate.
nlohmann::json trace_json(const std::vector<TracePoint>& trace) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& t : trace) {
    nlohmann::json p = candidate_json(t.c);
    p["stage"] = std::isinf(t.c.lambda) ? "stage1" : "stage12";
    p["error"] = t.e.error_per_sample;
    p["error_worst"] = t.e.error_worst;
    p["predicted"] = t.predicted;
    if (!std::isinf(t.c.lambda)) p["increment"] = t.increment;  // stage 2's share (search.hpp)
    p["sparsity_stage1"] = t.e.sparsity_stage1_mean;
    p["sparsity_stage12"] = t.e.sparsity_stage12_mean;
    p["sparsity_stage1_per_sample"] = t.e.sparsity_stage1_per_sample;
    p["pass"] = t.pass;
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace

void check_head_dim(const io::LayerInfo& layer, const std::filesystem::path& dump) {
  if (layer.head_dim > kMaxHeadDim) {
    fail(ExitCode::kDataError,
         "{}: layer {} has head dim {}, but sparge's kernels run D <= {} only (64 and 128 "
         "natively): thresholds for it could never be used",
         dump.string(), layer.index, layer.head_dim, kMaxHeadDim);
  }
}

std::filesystem::path journal_path(const TuneRequest& r) {
  auto name = r.output.filename().string() + ".partial.jsonl";
  return r.state_dir ? *r.state_dir / name : r.output.parent_path() / name;
}

TuneOutcome run_tune(const TuneRequest& rq) {
  rq.search.validate();
  if (rq.granularity != "head" && rq.granularity != "layer") {
    fail(ExitCode::kUsage, "--granularity '{}': expected head or layer", rq.granularity);
  }
  auto backend = make_oracle_backend(rq.backend);
  backend->use_devices(rq.devices);
  io::DumpReader reader(rq.dump);
  const auto& info = reader.info();

  ref::AttentionOptions attention;
  attention.causal = rq.causal.value_or(info.causal);
  attention.sink = rq.sink.value_or(io::attribute_true(info, {"sink", "attention_sink"}));
  attention.scale = info.scale.value_or(0.0);

  std::vector<const io::LayerInfo*> layers;
  if (rq.layers) {
    for (int l : *rq.layers) {
      bool found = false;
      for (const auto& li : info.layers) found |= li.index == l;
      if (!found) fail(ExitCode::kUsage, "--layers: {} has no layer {}", rq.dump.string(), l);
      layers.push_back(&reader.layer(l));
    }
  } else {
    for (const auto& li : info.layers) layers.push_back(&li);
  }
  if (layers.empty()) fail(ExitCode::kDataError, "{}: no layers", rq.dump.string());
  for (const auto* l : layers) check_head_dim(*l, rq.dump);
  std::optional<config::Shard> shard_record;
  if (rq.shard) {
    const auto [shard, shards] = *rq.shard;
    SPARGE_ASSERT(
        shards >= 1 && shard >= 0 && shard < shards,
        "shard {}/{}: TuneRequest::shard needs 0 <= i < n (cli::parse_shard checks --shard)", shard,
        shards);
    shard_record = config::Shard{shard, shards, {}};
    for (const auto* l : layers) shard_record->layers.push_back(l->index);
    std::vector<const io::LayerInfo*> mine;
    for (size_t pos = 0; pos < layers.size(); ++pos) {
      if (static_cast<int>(pos % shards) == shard) mine.push_back(layers[pos]);
    }
    if (mine.empty()) {
      fail(ExitCode::kUsage, "--shard {}/{}: no layer falls in this shard ({} layers selected)",
           shard, shards, layers.size());
    }
    layers = std::move(mine);
  }
  std::map<int, std::vector<int>> samples;
  for (const auto* l : layers) samples[l->index] = select_samples(reader, *l, rq.samples);

  if (rq.search.holdout == "spread") {
    for (const auto& [l, smp] : samples) {
      if (smp.size() < 2) {
        log::warn(
            "layer {}: one calibration sample: no spread to measure, so the held-out "
            "error cannot be predicted (tune on 2 or more samples, or add --margin)",
            l);
        break;
      }
      if (smp.size() == 2) {
        // Measured on the DiT stack: with two photographs, a held-out one that was harder for
        // every head than both missed on 54 of 192 heads; with three calibration photographs the
        // CPU real-image set missed on none in 4 simulated rotations.
        log::info(
            "two calibration samples: a new sample unlike both (sparser under the same "
            "thresholds) can still miss the budget; 3 or more samples predict it better "
            "(reports/tune-real/holdout-dit.md)");
        break;
      }
    }
  }

  std::string no_hilbert_why;
  const TokenOrder order = tune_token_order(info, attention.causal, rq.hilbert, &no_hilbert_why);
  if (!no_hilbert_why.empty()) {
    log::warn(
        "{}: has a token grid, but the Hilbert permutation is not applied ({}); tuning in "
        "the dump's order",
        rq.dump.string(), no_hilbert_why);
  } else if (order.active()) {
    log::info("token order: {} (--no-hilbert for the dump's order)",
              config::describe(order.record));
    warn_off_grid(info, layers, order);
  }

  // Provenance and the journal fingerprint: everything that changes the result.
  config::TunedConfig cfg;
  cfg.provenance.version = SPARGE_VERSION_STRING;
  cfg.provenance.git = SPARGE_GIT_SHA;
  cfg.provenance.backend = backend->name();
  cfg.provenance.device = backend->device();
  cfg.provenance.dump = rq.dump.string();
  cfg.provenance.dump_hash = content_hash(rq.dump);
  cfg.provenance.model_id = info.model_id;
  if (rq.samples) cfg.provenance.samples = *rq.samples;
  cfg.provenance.shard = shard_record;
  if (rq.timestamp) cfg.provenance.created_utc = utc_now();
  cfg.kernel.geometry = rq.geometry;
  cfg.kernel.causal = attention.causal;
  cfg.kernel.sink = attention.sink;
  cfg.budget.l1 = rq.search.l1;
  cfg.budget.l2 = rq.search.l2;
  cfg.search.granularity = rq.granularity;
  cfg.search.theta_grid = rq.search.theta_grid;
  cfg.search.tau_tol = rq.search.tau_tol;
  cfg.search.lambda_min = rq.search.lambda_min;
  cfg.search.lambda_max = rq.search.lambda_max;
  cfg.search.lambda_tol = rq.search.lambda_tol;
  cfg.search.tune_lambda = rq.search.tune_lambda;
  cfg.search.min_sparsity = rq.search.min_sparsity;
  cfg.search.margin = rq.search.margin;
  cfg.search.holdout = rq.search.holdout;
  cfg.search.mode = rq.search.mode;
  cfg.search.spread_k = rq.search.holdout == "edge" ? 0.0 : rq.search.spread_k;
  cfg.search.spread_floor = rq.search.holdout == "edge" ? 0.0 : rq.search.spread_floor;
  cfg.search.tau_plateau = rq.search.holdout == "edge" ? 0.0 : rq.search.tau_plateau;
  cfg.search.sparsity_cap = rq.search.holdout == "edge" ? 0.0 : rq.search.sparsity_cap;
  cfg.permutation = order.record;

  std::string fingerprint;
  {
    config::TunedConfig fp = cfg;
    fp.provenance.created_utc.reset();
    nlohmann::json j;
    j["config_head"] = config::to_yaml(fp);  // provenance, kernel, budget, search
    j["scale"] = attention.scale;
    for (const auto& [l, s] : samples) j["samples"][std::to_string(l)] = s;
    fingerprint = c10::sha1(j.dump()).str();
  }

  // Work units: one head, or one whole layer with --granularity layer.
  struct Unit {
    const io::LayerInfo* layer;
    int head;  // -1: every head of the layer
  };
  long total_heads = 0;
  for (const auto* l : layers) total_heads += l->num_q_heads;

  Journal journal(journal_path(rq), fingerprint);
  auto done = journal.open(rq.resume);
  std::vector<Unit> units;
  long resumed = 0;
  for (const auto* l : layers) {
    if (rq.granularity == "layer") {
      bool all = true;
      for (int h = 0; h < l->num_q_heads; ++h) all &= done.count({l->index, h}) > 0;
      if (all) {
        resumed += l->num_q_heads;
      } else {
        units.push_back({l, -1});
      }
    } else {
      for (int h = 0; h < l->num_q_heads; ++h) {
        if (done.count({l->index, h})) {
          ++resumed;
        } else {
          units.push_back({l, h});
        }
      }
    }
  }
  if (resumed) log::info("resuming: {} of {} heads already tuned", resumed, total_heads);

  int jobs = rq.jobs > 0 ? rq.jobs
                         : backend->preferred_jobs() *
                               std::max<int>(1, static_cast<int>(rq.devices.size()));
  jobs = resolve_jobs(jobs, static_cast<int>(units.size()));
  log::info("tuning {} heads in {} layers on {} ({} jobs, l1 {} l2 {})", total_heads - resumed,
            layers.size(), backend->device(), jobs, rq.search.l1, rq.search.l2);

  Progress progress("tune", total_heads, rq.progress);
  if (resumed) progress.advance(resumed, "resumed");
  std::mutex mu;
  // A kill or an I/O failure keeps the journal for --resume; bad data (NaN/Inf) does not: the
  // fixed dump has another hash, so the journal could never be resumed.
  try {
    parallel_for(static_cast<int>(units.size()), jobs, [&](int i) {
      const Unit& u = units[static_cast<size_t>(i)];
      const auto& L = *u.layer;
      const auto& smp = samples.at(L.index);
      std::vector<HeadRecord> recs;
      if (u.head >= 0) {
        std::vector<HeadRequest> reqs;
        reqs.push_back(load_head(reader, L, u.head, smp, rq.geometry, attention, order));
        auto oracles = backend->make_oracles(std::move(reqs));
        HeadResult r = search_head(*oracles.at(0), rq.search);
        log::debug(
            "layer {} head {}: {} candidates, {} attention evaluations, tau {} theta {} "
            "lambda {}, sparsity {:.4f}/{:.4f}, error {:.4f}/{:.4f}",
            L.index, u.head, r.evaluations, oracles[0]->evaluations(), r.chosen.tau, r.chosen.theta,
            r.chosen.lambda, r.sparsity_stage1, r.sparsity_stage12, r.error_stage1,
            r.error_stage12);
        recs.push_back({L.index, u.head, r.chosen, r.sparse, r.meets_budget, r.sparsity_stage1,
                        r.sparsity_stage12, r.error_stage1, r.error_stage12, r.expected_stage1,
                        r.expected_stage12, trace_json(r.trace)});
      } else {
        std::vector<HeadRequest> reqs;
        for (int h = 0; h < L.num_q_heads; ++h) {
          reqs.push_back(load_head(reader, L, h, smp, rq.geometry, attention, order));
        }
        auto oracles = backend->make_oracles(std::move(reqs));
        std::vector<HeadOracle*> ptrs;
        for (auto& o : oracles) ptrs.push_back(o.get());
        auto combined = make_combined_oracle(ptrs);
        HeadResult r = search_head(*combined, rq.search);
        // The layer's thresholds, measured per head for the record.
        Candidate c1 = r.chosen;
        c1.lambda = kNoSkip;
        std::vector<Candidate> both{c1, r.chosen};
        // The layer's trace is kept once, on its head 0 (the points are per layer).
        for (int h = 0; h < L.num_q_heads; ++h) {
          auto ev = oracles[static_cast<size_t>(h)]->evaluate(both);
          recs.push_back({L.index, h, r.chosen, r.sparse, r.meets_budget,
                          ev[0].sparsity_stage1_mean, ev[1].sparsity_stage12_mean,
                          ev[0].error_worst, ev[1].error_worst, predicted_error(ev[0], rq.search),
                          predicted_error(ev[1], rq.search),
                          h == 0 ? trace_json(r.trace) : nlohmann::json::array()});
        }
      }
      journal.append(recs);
      {
        std::lock_guard lock(mu);
        for (const auto& r : recs) done[{r.layer, r.head}] = r;
      }
      progress.advance(static_cast<long>(recs.size()),
                       u.head >= 0 ? fmt::format("layer {} head {}", L.index, u.head)
                                   : fmt::format("layer {}", L.index));
    });
  } catch (const Error& e) {
    if (e.code() == ExitCode::kDataError) journal.remove();
    throw;
  }
  progress.finish();

  TuneOutcome out;
  out.heads_resumed = resumed;
  for (const auto* l : layers) {
    config::TunedLayer tl;
    tl.layer = l->index;
    tl.module = l->module_path;
    for (int h = 0; h < l->num_q_heads; ++h) {
      const HeadRecord& r = done.at({l->index, h});
      // Top-k: the fraction goes to `topk`, τ = 1 (a reader that ignores topk keeps every
      // block); dense heads keep fraction 1 (θ = 1 forces every block anyway).
      tl.tau.push_back(rq.search.topk() ? 1.0f : r.c.tau);
      if (rq.search.topk()) tl.topk.push_back(r.sparse ? r.c.tau : 1.0f);
      tl.theta.push_back(r.c.theta);
      tl.lambda.push_back(r.c.lambda);
      tl.sparse.push_back(r.sparse);
      tl.sparsity_stage1.push_back(static_cast<float>(r.s1));
      tl.sparsity_stage12.push_back(static_cast<float>(r.s12));
      tl.error_stage1.push_back(static_cast<float>(r.e1));
      tl.error_stage12.push_back(static_cast<float>(r.e12));
      tl.expected_stage1.push_back(static_cast<float>(r.x1));
      tl.expected_stage12.push_back(static_cast<float>(r.x12));
      if (cfg.search.sparsity_cap > 0) {
        tl.sparsity_cap.push_back(
            r.sparse ? static_cast<float>(std::min(1.0, cfg.search.sparsity_cap * r.s1)) : 1.0f);
      }
      out.trace.push_back({{"layer", r.layer},
                           {"head", r.head},
                           {"sparse", r.sparse},
                           {"chosen", candidate_json(r.c)},
                           {"expected_stage1", r.x1},
                           {"expected_stage12", r.x12},
                           {"points", r.trace}});
      if (!r.meets) {
        out.infeasible.push_back(fmt::format("layer {} head {} (dense error {:.4f} > l1 {})",
                                             l->index, h, r.e1, rq.search.l1));
      }
    }
    cfg.layers.push_back(std::move(tl));
  }
  config::write_tuned(rq.output, cfg);
  journal.remove();
  out.config = std::move(cfg);
  return out;
}

EvalOutcome run_eval(const EvalRequest& rq) {
  auto backend = make_oracle_backend(rq.backend);
  io::DumpReader reader(rq.dump);
  const auto& cfg = rq.config;
  ref::AttentionOptions attention;
  attention.causal = cfg.kernel.causal;
  attention.sink = cfg.kernel.sink;
  attention.scale = reader.info().scale.value_or(0.0);
  // Eval follows the config's token order; a dump that cannot provide it is refused (exit 78).
  const TokenOrder order = config_token_order(cfg, reader.info(), rq.config_source);

  struct Unit {
    const io::LayerInfo* layer;
    const config::TunedLayer* tuned;
    int head;
  };
  std::vector<Unit> units;
  std::vector<int> layer_ids;
  if (rq.layers) {
    layer_ids = *rq.layers;
  } else {
    for (const auto& l : cfg.layers) layer_ids.push_back(l.layer);
    // A partial config (an incomplete merge, a --layers or --shard run) leaves layers of the
    // dump without thresholds: say so rather than pass on what was not checked.
    std::vector<int> uncovered;
    for (const auto& li : reader.info().layers) {
      if (!cfg.find_layer(li.index)) uncovered.push_back(li.index);
    }
    if (!uncovered.empty()) {
      log::warn(
          "{}: {} of the dump's {} layers have no thresholds in {} (layers {}): they are not "
          "evaluated and would run dense",
          rq.dump.string(), uncovered.size(), reader.info().layers.size(), rq.config_source,
          fmt::join(uncovered, ","));
    }
  }
  if (cfg.kernel.causal != reader.info().causal) {
    log::warn(
        "{}: tuned for {} attention, but {} is {}: the thresholds were tuned on another kind "
        "of model",
        rq.config_source, cfg.kernel.causal ? "causal" : "non-causal", rq.dump.string(),
        reader.info().causal ? "causal" : "not causal");
  }
  std::map<int, std::vector<int>> samples;
  for (int id : layer_ids) {
    const auto* tl = cfg.find_layer(id);
    if (!tl) fail(ExitCode::kUsage, "--layers: the tuned config has no layer {}", id);
    bool found = false;
    for (const auto& li : reader.info().layers) found |= li.index == id;
    if (!found)
      fail(ExitCode::kDataError, "{}: no layer {} (the tuned config has it)", rq.dump.string(), id);
    const auto& L = reader.layer(id);
    check_head_dim(L, rq.dump);
    if (L.num_q_heads != tl->heads()) {
      fail(ExitCode::kDataError, "{}: layer {} has {} heads, the tuned config {}", rq.dump.string(),
           id, L.num_q_heads, tl->heads());
    }
    samples[id] = select_samples(reader, L, rq.samples);
    for (int h = 0; h < L.num_q_heads; ++h) units.push_back({&L, tl, h});
  }

  EvalOutcome out;
  out.heads.resize(units.size());
  const int jobs = resolve_jobs(rq.jobs > 0 ? rq.jobs : backend->preferred_jobs(),
                                static_cast<int>(units.size()));
  Progress progress("eval", static_cast<long>(units.size()), rq.progress);
  parallel_for(static_cast<int>(units.size()), jobs, [&](int i) {
    const Unit& u = units[static_cast<size_t>(i)];
    const size_t h = static_cast<size_t>(u.head);
    std::vector<HeadRequest> reqs;
    reqs.push_back(load_head(reader, *u.layer, u.head, samples.at(u.layer->index),
                             cfg.kernel.geometry, attention, order));
    auto oracles = backend->make_oracles(std::move(reqs));
    EvalHead e;
    e.layer = u.layer->index;
    e.head = u.head;
    e.sparse = u.tuned->sparse[h];
    const bool topk = !u.tuned->topk.empty();
    Candidate c1 = e.sparse ? Candidate{topk ? u.tuned->topk[h] : u.tuned->tau[h],
                                        u.tuned->theta[h], kNoSkip, topk}
                            : kDenseCandidate;
    if (e.sparse && !u.tuned->sparsity_cap.empty()) c1.sparsity_cap = u.tuned->sparsity_cap[h];
    Candidate c12 = c1;
    c12.lambda = u.tuned->lambda[h];
    e.candidate = c12;
    std::vector<Candidate> both{c1, c12};
    auto ev = oracles.at(0)->evaluate(both);
    e.sparsity_stage1 = ev[0].sparsity_stage1_mean;
    e.error_stage1 = ev[0].error_worst;
    e.sparsity_stage12 = ev[1].sparsity_stage12_mean;
    e.error_stage12 = ev[1].error_worst;
    e.pass = e.error_stage1 <= cfg.budget.l1 && e.error_stage12 <= cfg.budget.l2;
    out.heads[static_cast<size_t>(i)] = e;
    progress.advance(1, fmt::format("layer {} head {}", e.layer, e.head));
  });
  progress.finish();
  for (const auto& e : out.heads) out.all_pass &= e.pass;
  std::set<int> used;
  for (const auto& [l, s] : samples) used.insert(s.begin(), s.end());
  out.samples_used.assign(used.begin(), used.end());
  return out;
}

}  // namespace sparge::tune
