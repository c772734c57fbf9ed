#include "report/trace_plot.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.hpp"
#include "common/json_fields.hpp"
#include "report/markup.hpp"

namespace sparge::report {
namespace {

using nlohmann::json;

// The trace's fields (common/json_fields.hpp), plus its own kinds: finite numbers, λ with null
// for -inf, and small non-negative counts.
class Reader : public JsonFields {
 public:
  using JsonFields::JsonFields;
  double finite(const json& obj, const std::string& key, const std::string& path) const {
    const double d = number(obj, key, path);
    if (!std::isfinite(d)) bad(path + "." + key, "not finite");
    return d;
  }
  std::optional<float> lambda(const json& obj, const std::string& path) const {
    const json& v = at(obj, "lambda", path);
    if (v.is_null()) return std::nullopt;
    if (!v.is_number()) bad(path + ".lambda", "expected a number or null (-inf)");
    return v.get<float>();
  }
  int count(const json& obj, const std::string& key, const std::string& path) const {
    const json& v = at(obj, key, path);
    if (!v.is_number_integer() || v.get<long long>() < 0 || v.get<long long>() > (1 << 20))
      bad(path + "." + key, "expected a non-negative integer");
    return v.get<int>();
  }
};

bool is_dense_candidate(const TraceDocPoint& p) {
  return p.tau == 1.0f && p.theta == 1.0f && !p.lambda;
}

std::string lambda_text(const std::optional<float>& l) {
  return l ? fmt::format("{:.4g}", *l) : "-inf";
}

// The stage-1 point of the chosen thresholds (λ = -inf), if the trace holds it.
const TraceDocPoint* chosen_stage1(const TraceDocHead& h) {
  for (const auto& p : h.points) {
    if (!p.lambda && p.tau == h.tau && p.theta == h.theta) return &p;
  }
  return nullptr;
}
const TraceDocPoint* chosen_final(const TraceDocHead& h) {
  for (const auto& p : h.points) {
    if (p.lambda == h.lambda && p.tau == h.tau && p.theta == h.theta) return &p;
  }
  return nullptr;
}

std::string num(double v) { return fmt::format("{:.4f}", v); }

}  // namespace

TraceDoc read_trace(const std::filesystem::path& path) {
  const std::string name = path.string();
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ExitCode::kNoInput, "{}: cannot open", name);
  std::stringstream ss;
  ss << in.rdbuf();
  json j;
  try {
    j = json::parse(ss.str());
  } catch (const json::exception& e) {
    fail(ExitCode::kDataError, "{}: not JSON ({})", name, e.what());
  }
  Reader r(name);
  if (!j.is_object()) r.bad("$", "expected an object");
  const std::string schema = r.text(j, "schema", "$");
  if (schema != "sparge.tune-trace")
    r.bad("$.schema",
          fmt::format("'{}': expected sparge.tune-trace (sparge tune --trace)", schema));
  const int version = r.count(j, "schema_version", "$");
  if (version != 1) r.bad("$.schema_version", fmt::format("{}: this sparge reads 1", version));
  TraceDoc d;
  const json& b = r.at(j, "budget", "$");
  d.l1 = r.finite(b, "l1", "$.budget");
  d.l2 = r.finite(b, "l2", "$.budget");
  if (!(d.l1 > 0) || !(d.l2 >= d.l1)) r.bad("$.budget", "need 0 < l1 <= l2");
  d.holdout = r.text(j, "holdout", "$");
  d.spread_k = r.finite(j, "spread_k", "$");
  if (j.contains("spread_floor")) d.spread_floor = r.finite(j, "spread_floor", "$");
  d.margin = r.finite(j, "margin", "$");
  if (!(d.margin >= 0 && d.margin < 1)) r.bad("$.margin", "expected a number in [0, 1)");
  if (j.contains("min_sparsity")) d.min_sparsity = r.finite(j, "min_sparsity", "$");
  if (j.contains("dump") && j["dump"].is_string()) d.dump = j["dump"].get<std::string>();
  if (j.contains("tuned") && j["tuned"].is_string()) d.tuned = j["tuned"].get<std::string>();
  if (j.contains("permutation") && j["permutation"].is_string())
    d.permutation = j["permutation"].get<std::string>();
  const json& heads = r.at(j, "heads", "$");
  if (!heads.is_array()) r.bad("$.heads", "expected an array");
  for (size_t i = 0; i < heads.size(); ++i) {
    const std::string hp = fmt::format("$.heads[{}]", i);
    const json& hj = heads[i];
    TraceDocHead h;
    h.layer = r.count(hj, "layer", hp);
    h.head = r.count(hj, "head", hp);
    h.sparse = r.boolean(hj, "sparse", hp);
    const json& c = r.at(hj, "chosen", hp);
    h.mode = r.text(c, "mode", hp + ".chosen");
    h.tau = static_cast<float>(r.finite(c, "tau", hp + ".chosen"));
    h.theta = static_cast<float>(r.finite(c, "theta", hp + ".chosen"));
    h.lambda = r.lambda(c, hp + ".chosen");
    h.expected_stage1 = r.finite(hj, "expected_stage1", hp);
    h.expected_stage12 = r.finite(hj, "expected_stage12", hp);
    const json& pts = r.at(hj, "points", hp);
    if (!pts.is_array()) r.bad(hp + ".points", "expected an array");
    for (size_t k = 0; k < pts.size(); ++k) {
      const std::string pp = fmt::format("{}.points[{}]", hp, k);
      const json& pj = pts[k];
      TraceDocPoint p;
      p.tau = static_cast<float>(r.finite(pj, "tau", pp));
      p.theta = static_cast<float>(r.finite(pj, "theta", pp));
      p.lambda = r.lambda(pj, pp);
      p.error_worst = r.finite(pj, "error_worst", pp);
      p.predicted = r.finite(pj, "predicted", pp);
      if (pj.contains("increment")) p.increment = r.finite(pj, "increment", pp);
      p.sparsity_stage1 = r.finite(pj, "sparsity_stage1", pp);
      p.sparsity_stage12 = r.finite(pj, "sparsity_stage12", pp);
      p.pass = r.boolean(pj, "pass", pp);
      h.points.push_back(p);
    }
    d.heads.push_back(std::move(h));
  }
  return d;
}

void check_trace_matches(const TraceDoc& t, const config::TunedConfig& cfg,
                         const std::string& trace_name, const std::string& cfg_name) {
  auto mismatch = [&](const std::string& what) {
    fail(ExitCode::kDataError, "{} does not describe {}: {} (a trace of another tune run?)",
         trace_name, cfg_name, what);
  };
  if (static_cast<float>(t.l1) != static_cast<float>(cfg.budget.l1) ||
      static_cast<float>(t.l2) != static_cast<float>(cfg.budget.l2)) {
    mismatch(fmt::format("budget l1 {} l2 {} in the trace, l1 {} l2 {} in the config", t.l1, t.l2,
                         cfg.budget.l1, cfg.budget.l2));
  }
  for (const auto& h : t.heads) {
    const config::TunedLayer* layer = nullptr;
    for (const auto& l : cfg.layers) {
      if (l.layer == h.layer) layer = &l;
    }
    if (!layer) mismatch(fmt::format("layer {} is not in the config", h.layer));
    if (h.head >= layer->heads())
      mismatch(fmt::format("layer {} has {} heads, the trace has head {}", h.layer, layer->heads(),
                           h.head));
    const auto k = static_cast<size_t>(h.head);
    const std::string where = fmt::format("layer {} head {}", h.layer, h.head);
    if (layer->sparse[k] != h.sparse)
      mismatch(fmt::format("{}: {} in the trace, {} in the config", where,
                           h.sparse ? "sparse" : "dense", layer->sparse[k] ? "sparse" : "dense"));
    const bool topk = h.mode == "topk";
    const float tau = topk && !layer->topk.empty() ? layer->topk[k] : layer->tau[k];
    const bool same = (!h.sparse || tau == h.tau) && layer->theta[k] == h.theta &&
                      (h.lambda ? layer->lambda[k] == *h.lambda : std::isinf(layer->lambda[k]));
    if (!same) {
      mismatch(
          fmt::format("{}: {} {} theta {} lambda {} in the trace, {} {} theta {} lambda {} "
                      "in the config",
                      where, topk ? "topk" : "tau", h.tau, h.theta, lambda_text(h.lambda),
                      topk ? "topk" : "tau", tau, layer->theta[k], layer->lambda[k]));
    }
  }
}

std::string dense_reason(const TraceDocHead& h, const TraceDoc& d) {
  if (h.sparse) return "";
  if (h.points.empty()) return "dense (no points in the trace)";
  for (const auto& p : h.points) {
    if (is_dense_candidate(p) && p.error_worst > d.l1)
      return fmt::format("even the dense mask misses l1: error {:.4f} > {} (quantisation alone)",
                         p.error_worst, d.l1);
  }
  const TraceDocPoint* best = nullptr;
  double lowest = INFINITY;
  for (const auto& p : h.points) {
    if (p.lambda || is_dense_candidate(p)) continue;
    lowest = std::min(lowest, p.predicted);
    if (p.pass && (!best || p.sparsity_stage1 > best->sparsity_stage1)) best = &p;
  }
  if (!best) {
    if (!std::isfinite(lowest)) return "dense (no stage-1 point evaluated)";
    return fmt::format("no threshold passes: lowest predicted error {:.4f} > target l1 {:.4g}",
                       lowest, d.target_l1());
  }
  if (best->sparsity_stage1 < d.min_sparsity)
    return fmt::format("best passing sparsity {:.4f} < min-sparsity {}", best->sparsity_stage1,
                       d.min_sparsity);
  return "dense";
}

TracePlot render_trace_plot(const TraceDoc& d, const TracePlotOptions& o,
                            const std::string& trace_name) {
  std::vector<const TraceDocHead*> sel;
  for (const auto& h : d.heads) {
    if (o.layers && std::find(o.layers->begin(), o.layers->end(), h.layer) == o.layers->end())
      continue;
    sel.push_back(&h);
  }
  if (sel.empty()) {
    fail(ExitCode::kUsage, "{}: no head of the trace is in the selected layers{}", trace_name,
         d.heads.empty() ? " (the trace has no heads)" : "");
  }
  TracePlot out;
  out.selected = static_cast<int>(sel.size());
  if (static_cast<int>(sel.size()) > o.max_panels) {
    out.note = fmt::format(
        "plotted {} of {} heads (up to layer {} head {}); pick others with --layers or raise "
        "--max-panels",
        o.max_panels, sel.size(), sel[static_cast<size_t>(o.max_panels) - 1]->layer,
        sel[static_cast<size_t>(o.max_panels) - 1]->head);
    sel.resize(static_cast<size_t>(o.max_panels));
  }
  out.plotted = static_cast<int>(sel.size());

  // Shared axes (small multiples): x = predicted error on [0, 2 x l2], y = sparsity on
  // [0, ymax], ymax the largest sparsity of a point inside the x range rounded up to a tenth
  // (far-failing points of small τ are very sparse and would squash the budget region). Points
  // outside either range sit on the frame's edge, drawn hollow ("clipped").
  const double xmax = 2.0 * d.l2;
  auto sparsity_of = [](const TraceDocPoint& p) {
    return p.lambda ? p.sparsity_stage12 : p.sparsity_stage1;
  };
  double smax = 0;
  for (const auto* h : sel) {
    for (const auto& p : h->points) {
      if (p.predicted <= xmax) smax = std::max(smax, sparsity_of(p));
    }
  }
  const double ymax = std::clamp(std::ceil(smax * 10.0 - 1e-9) / 10.0, 0.1, 1.0);

  constexpr int kPW = 250, kPH = 190;                // panel size
  constexpr int kL = 42, kR = 10, kT = 34, kB = 28;  // plot area inside a panel
  constexpr int kPlotW = kPW - kL - kR, kPlotH = kPH - kT - kB;
  constexpr int kHeader = 64;
  const int cols = std::min<int>(out.plotted, 8);
  const int rows = (out.plotted + cols - 1) / cols;
  const int W = std::max(cols * kPW + 10, 1000), H = kHeader + rows * kPH + 10;
  auto px = [&](double err) { return kL + std::min(err, xmax) / xmax * kPlotW; };
  auto py = [&](double s) { return kT + kPlotH - std::clamp(s, 0.0, ymax) / ymax * kPlotH; };

  std::string s;
  s += fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\" font-size=\"10\" "
      "data-schema=\"sparge.tune-trace-plot\" data-l1=\"{2}\" data-l2=\"{3}\" "
      "data-target-l1=\"{4}\" data-target-l2=\"{5}\" data-xmax=\"{6}\" data-ymax=\"{7}\" "
      "data-plot-x=\"{8}\" data-plot-y=\"{9}\" data-plot-w=\"{10}\" data-plot-h=\"{11}\">\n",
      W, H, d.l1, d.l2, d.target_l1(), d.target_l2(), xmax, ymax, kL, kT, kPlotW, kPlotH);
  s += fmt::format("<title>{}</title>\n",
                   escape_markup(fmt::format("sparge tune search trace: {}",
                                             d.tuned.empty() ? trace_name : d.tuned)));
  s += "<style>\n"
       ".frame{fill:#fff;stroke:#999}.frame.dense{fill:#f3f3f3}\n"
       ".budget-l1{stroke:#d13b3b;stroke-width:1.2}.budget-l2{stroke:#d17b3b;"
       "stroke-width:1.2;stroke-dasharray:4 3}\n"
       ".pt.pass{fill:#2e7ebf}.pt.fail{fill:#c9c9c9}.pt.s12.pass{fill:#2e9e4f}\n"
       ".pt.clipped{fill:none;stroke:#999}.chosen{fill:none;stroke:#000;stroke-width:1.6}\n"
       ".title{font-weight:bold}.reason{fill:#b00}.axis{fill:#555}\n"
       "</style>\n";
  // Header: what is drawn, and the legend.
  s += fmt::format(
      "<text x=\"8\" y=\"16\" font-size=\"13\" class=\"title\">{}</text>\n",
      escape_markup(fmt::format(
          "Search trace of {} (dump {}): {} head(s), hold-out rule {}{}",
          d.tuned.empty() ? "?" : d.tuned, d.dump.empty() ? "?" : d.dump, out.plotted, d.holdout,
          d.holdout == "spread" ? fmt::format(" (K = {}, floor {})", d.spread_k, d.spread_floor)
                                : "")));
  s += fmt::format("<text x=\"8\" y=\"32\">{}</text>\n",
                   escape_markup(fmt::format(
                       "x: predicted held-out error (rel-L1, 0 to {:.3g}); y: sparsity (0 to "
                       "{:.2g}); points outside the ranges hollow on the edge. Red line: target l1 "
                       "{:.4g}; dashed: target l2 {:.4g}{}.",
                       xmax, ymax, d.target_l1(), d.target_l2(),
                       d.margin > 0 ? fmt::format(" ((1 - margin {}) x budget)", d.margin) : "")));
  s += "<g class=\"legend\" transform=\"translate(8,46)\">"
       "<circle class=\"pt s1 pass\" cx=\"4\" cy=\"0\" r=\"3\"/><text x=\"10\" y=\"3\">stage 1, "
       "passes</text>"
       "<circle class=\"pt s1 fail\" cx=\"110\" cy=\"0\" r=\"3\"/><text x=\"116\" y=\"3\">fails"
       "</text>"
       "<rect class=\"pt s12 pass\" x=\"160\" y=\"-3\" width=\"6\" height=\"6\"/><text x=\"170\" "
       "y=\"3\">stage 1+2 (lambda), passes</text>"
       "<circle class=\"chosen\" cx=\"334\" cy=\"0\" r=\"6\"/><text x=\"344\" y=\"3\">chosen"
       "</text>"
       "<rect class=\"frame dense\" x=\"390\" y=\"-6\" width=\"12\" height=\"12\"/><text x=\"406\" "
       "y=\"3\">dense head (reason in red)</text></g>\n";

  std::string md;
  md += fmt::format("# Search trace: {}\n\n", d.tuned.empty() ? trace_name : d.tuned);
  md += fmt::format(
      "Budget l1 {} / l2 {}{}; hold-out rule `{}`{}. Predicted = the error the rule expects on "
      "an unseen sample; headroom = target − predicted.\n\n",
      d.l1, d.l2, d.margin > 0 ? fmt::format(" (target x (1 - {}))", d.margin) : "", d.holdout,
      d.holdout == "spread" ? fmt::format(", K = {}, floor {}", d.spread_k, d.spread_floor) : "");
  md +=
      "| layer | head | status | points | stage-1 sparsity | predicted l1 | headroom l1 | "
      "stage 1+2 sparsity | predicted l2 | headroom l2 | why dense |\n"
      "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|\n";

  for (size_t i = 0; i < sel.size(); ++i) {
    const TraceDocHead& h = *sel[i];
    const int ox = 5 + static_cast<int>(i % static_cast<size_t>(cols)) * kPW;
    const int oy = kHeader + static_cast<int>(i / static_cast<size_t>(cols)) * kPH;
    const std::string reason = dense_reason(h, d);
    const auto* c1 = chosen_stage1(h);
    const auto* c12 = chosen_final(h);
    s += fmt::format(
        "<g class=\"panel\" data-layer=\"{}\" data-head=\"{}\" data-sparse=\"{}\" "
        "data-points=\"{}\" transform=\"translate({},{})\">\n",
        h.layer, h.head, h.sparse ? "true" : "false", h.points.size(), ox, oy);
    s += fmt::format("<rect class=\"frame{}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>\n",
                     h.sparse ? "" : " dense", kL, kT, kPlotW, kPlotH);
    const std::string head_line =
        h.sparse ? fmt::format("L{} H{}: sparsity {:.3f}, predicted {:.4f}", h.layer, h.head,
                               c1 ? c1->sparsity_stage1 : 0.0, h.expected_stage1)
                 : fmt::format("L{} H{}: dense", h.layer, h.head);
    s +=
        fmt::format("<text class=\"title\" x=\"4\" y=\"12\">{}</text>\n", escape_markup(head_line));
    if (!reason.empty()) {
      // Two short lines fit the panel width better than one long one.
      std::string a = reason, b;
      if (a.size() > 54) {
        size_t cut = a.rfind(' ', 54);
        if (cut == std::string::npos) cut = 54;
        b = a.substr(cut + 1);
        a = a.substr(0, cut);
      }
      s += fmt::format("<text class=\"reason\" x=\"4\" y=\"22\" font-size=\"8\">{}</text>\n",
                       escape_markup(a));
      if (!b.empty())
        s += fmt::format("<text class=\"reason\" x=\"4\" y=\"31\" font-size=\"8\">{}</text>\n",
                         escape_markup(b));
    }
    // Axes: ticks at 0, l1, l2, xmax and 0, ymax / 2, ymax.
    const double bx1 = px(d.target_l1()), bx2 = px(d.target_l2());
    s += fmt::format(
        "<line class=\"budget-l1\" data-error=\"{}\" x1=\"{:.2f}\" y1=\"{}\" x2=\"{:.2f}\" "
        "y2=\"{}\"/>\n",
        d.target_l1(), bx1, kT, bx1, kT + kPlotH);
    s += fmt::format(
        "<line class=\"budget-l2\" data-error=\"{}\" x1=\"{:.2f}\" y1=\"{}\" x2=\"{:.2f}\" "
        "y2=\"{}\"/>\n",
        d.target_l2(), bx2, kT, bx2, kT + kPlotH);
    for (double xv : {0.0, d.l1, xmax}) {
      s += fmt::format(
          "<text class=\"axis\" x=\"{:.2f}\" y=\"{}\" font-size=\"8\" "
          "text-anchor=\"middle\">{:.3g}</text>\n",
          px(xv), kT + kPlotH + 10, xv);
    }
    for (double yv : {0.0, ymax / 2, ymax}) {
      s += fmt::format(
          "<text class=\"axis\" x=\"{}\" y=\"{:.2f}\" font-size=\"8\" "
          "text-anchor=\"end\">{:.2g}</text>\n",
          kL - 3, py(yv) + 3, yv);
    }
    s += fmt::format(
        "<text class=\"axis\" x=\"{}\" y=\"{}\" font-size=\"8\" text-anchor=\"middle\">predicted "
        "error</text>\n<text class=\"axis\" x=\"10\" y=\"{}\" font-size=\"8\" "
        "text-anchor=\"middle\" transform=\"rotate(-90 10 {})\">sparsity</text>\n",
        kL + kPlotW / 2, kT + kPlotH + 21, kT + kPlotH / 2, kT + kPlotH / 2);
    if (h.points.empty()) {
      s += fmt::format(
          "<text class=\"axis\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">no points (per-layer "
          "tuning: see head 0)</text>\n",
          kL + kPlotW / 2, kT + kPlotH / 2);
    }
    for (const auto& p : h.points) {
      const double sp = sparsity_of(p);
      const bool clipped = p.predicted > xmax || sp > ymax;
      const std::string cls = fmt::format("pt {} {}{}", p.lambda ? "s12" : "s1",
                                          p.pass ? "pass" : "fail", clipped ? " clipped" : "");
      const std::string tip = fmt::format(
          "{} {:.6g} theta {:.4g} lambda {}: predicted {:.4f} (worst calibration {:.4f}){}, "
          "sparsity stage 1 {:.4f}, stage 1+2 {:.4f}, {}",
          h.mode == "topk" ? "topk" : "tau", p.tau, p.theta, lambda_text(p.lambda), p.predicted,
          p.error_worst,
          p.increment ? fmt::format(", lambda adds {:.4f} (share {:.4g})", *p.increment,
                                    d.target_l2() - d.target_l1())
                      : "",
          p.sparsity_stage1, p.sparsity_stage12, p.pass ? "passes" : "fails");
      const std::string data =
          fmt::format("data-error=\"{}\" data-sparsity=\"{}\"", p.predicted, sp);
      if (p.lambda) {
        s += fmt::format(
            "<rect class=\"{}\" {} x=\"{:.2f}\" y=\"{:.2f}\" width=\"5\" height=\"5\"><title>{}"
            "</title></rect>\n",
            cls, data, px(p.predicted) - 2.5, py(sp) - 2.5, escape_markup(tip));
      } else {
        s += fmt::format(
            "<circle class=\"{}\" {} cx=\"{:.2f}\" cy=\"{:.2f}\" r=\"2.5\"><title>{}</title>"
            "</circle>\n",
            cls, data, px(p.predicted), py(sp), escape_markup(tip));
      }
    }
    // The chosen point(s): its stage-1 point and, when λ was kept, the stage 1+2 point.
    if (c1) {
      s += fmt::format(
          "<circle class=\"chosen s1\" data-error=\"{}\" data-sparsity=\"{}\" cx=\"{:.2f}\" "
          "cy=\"{:.2f}\" r=\"5.5\"/>\n",
          c1->predicted, c1->sparsity_stage1, px(c1->predicted), py(c1->sparsity_stage1));
    }
    if (c12 && c12 != c1) {
      s += fmt::format(
          "<circle class=\"chosen s12\" data-error=\"{}\" data-sparsity=\"{}\" cx=\"{:.2f}\" "
          "cy=\"{:.2f}\" r=\"5.5\"/>\n",
          c12->predicted, c12->sparsity_stage12, px(c12->predicted), py(c12->sparsity_stage12));
    }
    s += "</g>\n";

    const double s1 = c1 ? c1->sparsity_stage1 : 0.0;
    const double s12 = c12 ? (c12->lambda ? c12->sparsity_stage12 : c12->sparsity_stage1) : s1;
    md +=
        fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", h.layer, h.head,
                    h.sparse ? "sparse" : "dense", h.points.size(), num(s1), num(h.expected_stage1),
                    num(d.target_l1() - h.expected_stage1), num(s12), num(h.expected_stage12),
                    num(d.target_l2() - h.expected_stage12), reason.empty() ? "-" : reason);
  }
  s += "</svg>\n";
  if (!out.note.empty()) md += "\n" + out.note + "\n";
  out.svg = std::move(s);
  out.markdown = std::move(md);
  return out;
}

}  // namespace sparge::report
