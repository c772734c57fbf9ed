// The kernel self-check behind `sparge eval --check-kernel` (see kernel_check.hpp): two runs of
// the eval driver (run_eval), one per oracle backend, joined per head.
#include "tune/kernel_check.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/log.hpp"
#include "io/dump.hpp"
#include "kernels/api.h"
#include "runtime/runtime.hpp"
#include "tune/table.hpp"

namespace sparge::tune {

double kernel_error_bound(double cpu_error) {
  return std::max((1.0 + kKernelBoundRelative) * cpu_error, cpu_error + kKernelBoundAbsolute);
}

bool kernel_within_bound(double cpu_error, double cuda_error) {
  if (std::isnan(cpu_error) || std::isnan(cuda_error)) return false;
  return cuda_error <= kernel_error_bound(cpu_error);
}

double mask_sparsity_tolerance(int64_t valid_blocks) {
  return valid_blocks > 0 ? std::max(kMaskTolerance, 1.0 / static_cast<double>(valid_blocks))
                          : kMaskTolerance;
}

void require_cuda_device() {
  if (kernels::device_count() == 0) {
    fail(ExitCode::kNoDevice,
         "--check-kernel needs a CUDA device (it compares the kernels with the CPU reference): "
         "none visible");
  }
}

namespace {

KernelCheckStage stage(double cpu, double cuda) {
  KernelCheckStage s;
  s.cpu_error = cpu;
  s.cuda_error = cuda;
  s.bound = kernel_error_bound(cpu);
  s.pass = kernel_within_bound(cpu, cuda);
  return s;
}

std::string num(double v) { return fmt::format("{:.5f}", v); }

}  // namespace

config::TunedConfig dense_config(const std::filesystem::path& dump,
                                 const std::optional<std::vector<int>>& layers,
                                 const ref::Geometry& geometry) {
  io::DumpReader reader(dump);
  const auto& info = reader.info();
  config::TunedConfig cfg;
  cfg.provenance.dump = dump.string();
  cfg.kernel.geometry = geometry;
  cfg.kernel.causal = info.causal;
  cfg.kernel.sink = io::attribute_true(info, {"sink", "attention_sink"});
  for (const auto& li : info.layers) {
    if (layers && std::find(layers->begin(), layers->end(), li.index) == layers->end()) continue;
    config::TunedLayer t;
    t.layer = li.index;
    t.module = li.module_path;
    for (int h = 0; h < li.num_q_heads; ++h) {
      t.tau.push_back(kDenseCandidate.tau);
      t.theta.push_back(kDenseCandidate.theta);
      t.lambda.push_back(kNoSkip);
      t.sparse.push_back(false);
      t.sparsity_stage1.push_back(0.0f);
      t.sparsity_stage12.push_back(0.0f);
      t.error_stage1.push_back(0.0f);
      t.error_stage12.push_back(0.0f);
    }
    cfg.layers.push_back(std::move(t));
  }
  if (layers) {
    for (int l : *layers) {
      if (!cfg.find_layer(l))
        fail(ExitCode::kUsage, "--layers: {} has no layer {}", dump.string(), l);
    }
  }
  if (cfg.layers.empty()) fail(ExitCode::kDataError, "{}: no layers", dump.string());
  return cfg;
}

KernelCheckOutcome combine_kernel_check(const EvalOutcome& cpu, const EvalOutcome& cuda,
                                        const std::vector<int64_t>& valid_blocks_per_head) {
  SPARGE_ASSERT(cpu.heads.size() == cuda.heads.size(), "kernel check: {} cpu heads, {} cuda heads",
                cpu.heads.size(), cuda.heads.size());
  KernelCheckOutcome out;
  out.samples_used = cpu.samples_used;
  for (size_t i = 0; i < cpu.heads.size(); ++i) {
    const EvalHead& c = cpu.heads[i];
    const EvalHead& g = cuda.heads[i];
    SPARGE_ASSERT(c.layer == g.layer && c.head == g.head,
                  "kernel check: head {} is layer {} head {} on cpu, layer {} head {} on cuda", i,
                  c.layer, c.head, g.layer, g.head);
    KernelCheckHead h;
    h.layer = c.layer;
    h.head = c.head;
    h.sparse = c.sparse;
    h.candidate = c.candidate;
    h.stage1 = stage(c.error_stage1, g.error_stage1);
    h.stage12 = stage(c.error_stage12, g.error_stage12);
    h.cpu_sparsity_stage1 = c.sparsity_stage1;
    h.cuda_sparsity_stage1 = g.sparsity_stage1;
    h.cpu_sparsity_stage12 = c.sparsity_stage12;
    h.cuda_sparsity_stage12 = g.sparsity_stage12;
    h.mask_tolerance = i < valid_blocks_per_head.size()
                           ? mask_sparsity_tolerance(valid_blocks_per_head[i])
                           : kMaskTolerance;
    h.masks_agree = std::abs(h.cpu_sparsity_stage1 - h.cuda_sparsity_stage1) <= h.mask_tolerance;
    h.pass = h.stage1.pass && h.stage12.pass;
    out.failures += h.pass ? 0 : 1;
    out.mask_mismatches += h.masks_agree ? 0 : 1;
    out.heads.push_back(h);
  }
  out.all_pass = out.failures == 0;
  return out;
}

KernelCheckOutcome run_kernel_check(KernelCheckRequest rq) {
  // No device: exit 69 at once, not after minutes of CPU reference work.
  if (rq.kernel_backend == "cuda") require_cuda_device();
  if (rq.dense) {
    const std::string name = rq.kernel.empty() ? runtime::resolve_kernel("auto") : rq.kernel;
    rq.eval.config = dense_config(rq.eval.dump, rq.eval.layers,
                                  ref::geometry_by_name(runtime::kernel_geometry(name)));
  }
  const auto& cfg = rq.eval.config;
  const std::string device = make_oracle_backend(rq.kernel_backend)->device();
  log::info("check-kernel: {} geometry, kernels on {}, CPU reference beside them",
            cfg.kernel.geometry.name, device);

  // The kernels first: a kernel that cannot run here (not compiled for this GPU) fails in
  // seconds, before the slower reference.
  EvalRequest cuda_rq = rq.eval;
  cuda_rq.backend = rq.kernel_backend;
  const EvalOutcome cuda = run_eval(cuda_rq);
  EvalRequest cpu_rq = rq.eval;
  cpu_rq.backend = "cpu";
  const EvalOutcome cpu = run_eval(cpu_rq);

  // Causally valid blocks per (batch, head) of each evaluated head, for the mask tolerance.
  io::DumpReader reader(rq.eval.dump);
  std::vector<int64_t> valid;
  for (const EvalHead& e : cpu.heads) {
    const io::LayerInfo& L = reader.layer(e.layer);
    int64_t n = 0;
    if (!L.samples.empty()) {
      const auto& s = L.samples.front();
      n = ref::causal_block_mask(s.q_shape[2], s.kv_shape[2], cfg.kernel.geometry,
                                 cfg.kernel.causal)
              .sum()
              .item<int64_t>();
    }
    valid.push_back(n);
  }
  KernelCheckOutcome out = combine_kernel_check(cpu, cuda, valid);
  out.device = device;
  out.kernel = cfg.kernel.geometry.name;
  for (const auto& h : out.heads) {
    if (!h.pass) {
      log::warn(
          "layer {} head {}: kernel error over the bound: stage 1 cuda {:.5f} vs cpu {:.5f} "
          "(bound {:.5f}), stage 1+2 cuda {:.5f} vs cpu {:.5f} (bound {:.5f})",
          h.layer, h.head, h.stage1.cuda_error, h.stage1.cpu_error, h.stage1.bound,
          h.stage12.cuda_error, h.stage12.cpu_error, h.stage12.bound);
    }
    if (!h.masks_agree) {
      log::warn(
          "layer {} head {}: stage-1 masks differ: sparsity cpu {:.4f}, cuda {:.4f} (tolerance "
          "{:.4f})",
          h.layer, h.head, h.cpu_sparsity_stage1, h.cuda_sparsity_stage1, h.mask_tolerance);
    }
  }
  return out;
}

std::string render_kernel_check(const KernelCheckOutcome& out, const std::string& format,
                                const std::string& dump, const std::string& tuned) {
  if (format == "json") {
    auto st = [](const KernelCheckStage& s) {
      return nlohmann::json{{"cpu_error", s.cpu_error},
                            {"cuda_error", s.cuda_error},
                            {"bound", s.bound},
                            {"pass", s.pass}};
    };
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& h : out.heads) {
      rows.push_back(
          {{"layer", h.layer},
           {"head", h.head},
           {"sparse", h.sparse},
           {"tau", h.candidate.tau},
           {"theta", h.candidate.theta},
           {"lambda", std::isinf(h.candidate.lambda) ? nlohmann::json(nullptr)
                                                     : nlohmann::json(h.candidate.lambda)},
           {"stage1", st(h.stage1)},
           {"stage12", st(h.stage12)},
           {"sparsity_stage1", {{"cpu", h.cpu_sparsity_stage1}, {"cuda", h.cuda_sparsity_stage1}}},
           {"sparsity_stage12",
            {{"cpu", h.cpu_sparsity_stage12}, {"cuda", h.cuda_sparsity_stage12}}},
           {"mask_tolerance", h.mask_tolerance},
           {"masks_agree", h.masks_agree},
           {"pass", h.pass}});
    }
    nlohmann::json doc = {
        {"check", "kernel"},
        {"dump", dump},
        {"tuned", tuned.empty() ? nlohmann::json(nullptr) : nlohmann::json(tuned)},
        {"dense", tuned.empty()},
        {"kernel", out.kernel},
        {"device", out.device},
        {"samples", out.samples_used},
        {"metric", "rel_l1 vs dense fp64 attention, worst over samples"},
        {"bound",
         {{"relative", kKernelBoundRelative},
          {"absolute", kKernelBoundAbsolute},
          {"rule", "cuda_error <= max(1.1 x cpu_error, cpu_error + 0.002)"}}},
        {"failures", out.failures},
        {"mask_mismatches", out.mask_mismatches},
        {"pass", out.all_pass},
        {"heads", rows}};
    return doc.dump(2) + "\n";
  }
  Table t;
  t.columns = {
      "layer",       "head",         "sparse",    "s1_err_cpu",      "s1_err_cuda",      "s1_bound",
      "s12_err_cpu", "s12_err_cuda", "s12_bound", "s1_sparsity_cpu", "s1_sparsity_cuda", "masks",
      "status"};
  for (const auto& h : out.heads) {
    t.rows.push_back({std::to_string(h.layer), std::to_string(h.head), h.sparse ? "yes" : "dense",
                      num(h.stage1.cpu_error), num(h.stage1.cuda_error), num(h.stage1.bound),
                      num(h.stage12.cpu_error), num(h.stage12.cuda_error), num(h.stage12.bound),
                      fmt::format("{:.4f}", h.cpu_sparsity_stage1),
                      fmt::format("{:.4f}", h.cuda_sparsity_stage1),
                      h.masks_agree ? "same" : "DIFFER", h.pass ? "PASS" : "FAIL"});
  }
  std::string s = t.render(format);
  if (format == "text") {
    double worst_ratio = 0;
    const KernelCheckHead* worst = nullptr;
    for (const auto& h : out.heads) {
      for (const auto* st : {&h.stage1, &h.stage12}) {
        const double r = st->cpu_error > 0 ? st->cuda_error / st->cpu_error
                                           : std::numeric_limits<double>::infinity();
        if (!worst || r > worst_ratio || std::isnan(r)) {
          worst_ratio = r;
          worst = &h;
        }
      }
    }
    s += fmt::format(
        "kernel check ({} kernels on {} vs the CPU reference; rel-L1 vs dense fp64, worst over "
        "samples; bound max(1.1 x cpu, cpu + 0.002)): {} heads, {} over the bound, {} with "
        "differing stage-1 masks",
        out.kernel, out.device, out.heads.size(), out.failures, out.mask_mismatches);
    if (worst) {
      s += fmt::format("; worst cuda/cpu {:.3f} (layer {} head {})", worst_ratio, worst->layer,
                       worst->head);
    }
    s += fmt::format("; {}\n", out.all_pass ? "PASS" : "FAIL");
  }
  return s;
}

}  // namespace sparge::tune
