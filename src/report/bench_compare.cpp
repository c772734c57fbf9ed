#include "report/bench_compare.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <set>
#include <tuple>

#include "common/error.hpp"
#include "report/markup.hpp"

namespace sparge::report {

using bench::Row;

const char* status_label(Status s) {
  switch (s) {
    case Status::kSlow:
      return "🔴 SLOW";
    case Status::kNoisy:
      return "🟡 NOISY";
    case Status::kFast:
      return "🟢 FAST";
    case Status::kSame:
      return "⚪ SAME";
    case Status::kNew:
      return "🆕 NEW";
    case Status::kGone:
      return "⚫ GONE";
  }
  return "?";
}

int BenchComparison::count(Status s) const {
  return static_cast<int>(std::count_if(rows.begin(), rows.end(),
                                        [&](const RowComparison& r) { return r.status == s; }));
}

int BenchComparison::count_less_accurate() const {
  return static_cast<int>(std::count_if(rows.begin(), rows.end(),
                                        [](const RowComparison& r) { return r.less_accurate; }));
}

bool BenchComparison::failed(const CompareOptions& o) const {
  return count(Status::kSlow) > 0 || count_less_accurate() > 0 ||
         (!o.allow_gone && count(Status::kGone) > 0) ||
         (o.fail_on_noisy && count(Status::kNoisy) > 0);
}

bool BenchComparison::has_accuracy() const {
  return std::any_of(rows.begin(), rows.end(), [](const RowComparison& r) {
    return (r.base && r.base->rel_l1) || (r.cur && r.cur->rel_l1);
  });
}

double parse_threshold(const std::string& text) {
  std::string t = text;
  const bool percent = !t.empty() && t.back() == '%';
  if (percent) t.pop_back();
  double v = 0;
  auto [ptr, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (t.empty() || ec != std::errc() || ptr != t.data() + t.size() || !(v >= 0)) {
    fail(ExitCode::kUsage, "--threshold '{}': expected a percentage like 5% or a ratio like 0.05",
         text);
  }
  if (percent || v >= 1.0) v /= 100.0;
  if (v >= 1.0) fail(ExitCode::kUsage, "--threshold '{}': must be below 100%", text);
  return v;
}

std::pair<double, double> parse_accuracy_threshold(const std::string& text) {
  const size_t comma = text.find(',');
  const double rel = parse_threshold(text.substr(0, comma));
  double abs = 0.002;
  if (comma != std::string::npos) {
    const std::string t = text.substr(comma + 1);
    auto [ptr, ec] = std::from_chars(t.data(), t.data() + t.size(), abs);
    if (t.empty() || ec != std::errc() || ptr != t.data() + t.size() || !(abs >= 0)) {
      fail(ExitCode::kUsage,
           "--accuracy-threshold '{}': expected REL[,ABS], e.g. 10%,0.002 (ABS a rel-L1 "
           "difference >= 0)",
           text);
    }
  }
  return {rel, abs};
}

bool less_accurate(double base_rel_l1, double cur_rel_l1, double relative, double absolute) {
  return cur_rel_l1 - base_rel_l1 > std::max(relative * base_rel_l1, absolute);
}

std::optional<double> clock_change(const RowComparison& r) {
  if (r.prepare || !r.base || !r.cur || !r.base->clock_mhz || !r.cur->clock_mhz) return {};
  if (!(*r.base->clock_mhz > 0)) return {};
  return *r.cur->clock_mhz / *r.base->clock_mhz - 1;
}

Status classify(double delta, double noise, double threshold) {
  if (std::abs(delta) > std::max(threshold, noise))
    return delta > 0 ? Status::kSlow : Status::kFast;
  return noise > threshold ? Status::kNoisy : Status::kSame;
}

namespace {

using Key = std::tuple<std::string, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool,
                       int64_t, std::string>;
constexpr size_t kKeyDensity = 8;  // Key's density entry
Key key_of(const Row& r) {
  const auto& s = r.shape;
  // Densities compared at 1e-6 resolution (they are written with full precision). The inputs
  // (data) are part of the row: real-image and N(0, 1) rows of one shape are different rows.
  return {r.name,     s.batch,  s.heads,
          s.kv_heads, s.seq_q,  s.seq_k,
          s.head_dim, r.causal, std::llround(r.density * 1e6),
          r.data};
}

// Regressions first: SLOW and LESS ACCURATE rows, then the rest by status.
int rank(const RowComparison& r) { return r.less_accurate ? 0 : static_cast<int>(r.status); }

}  // namespace

BenchComparison compare_bench(const bench::Results& base, const bench::Results& cur,
                              const CompareOptions& options, const std::string& base_name,
                              const std::string& new_name) {
  if (base.env.gpu_name() != cur.env.gpu_name() && !options.force) {
    fail(ExitCode::kUsage,
         "{} ran on '{}' but {} on '{}': timings of different GPU models are not comparable "
         "(--force compares them anyway)",
         base_name, base.env.gpu_name(), new_name, cur.env.gpu_name());
  }
  BenchComparison cmp;
  cmp.base_env = base.env;
  cmp.new_env = cur.env;
  cmp.base_name = base_name;
  cmp.new_name = new_name;
  std::map<Key, size_t> new_index;
  for (size_t i = 0; i < cur.rows.size(); ++i) new_index.emplace(key_of(cur.rows[i]), i);
  std::vector<bool> used(cur.rows.size(), false);
  for (const Row& b : base.rows) {
    RowComparison rc;
    rc.base = b;
    auto it = new_index.find(key_of(b));
    if (it == new_index.end() || used[it->second]) {
      rc.status = Status::kGone;
    } else {
      used[it->second] = true;
      rc.cur = cur.rows[it->second];
      rc.delta = rc.cur->time.median / b.time.median - 1.0;
      rc.noise = std::hypot(b.time.rel_spread(), rc.cur->time.rel_spread());
      rc.status = classify(rc.delta, rc.noise, options.threshold);
      // Only errors against the same reference compare (a v1 row vs cuDNN never against fp64).
      if (b.rel_l1 && rc.cur->rel_l1 && b.accuracy_reference == rc.cur->accuracy_reference) {
        rc.less_accurate = less_accurate(*b.rel_l1, *rc.cur->rel_l1, options.accuracy_relative,
                                         options.accuracy_absolute);
      }
    }
    cmp.rows.push_back(std::move(rc));
  }
  // Prediction + quantisation: the same for every density of a shape, so compared once per
  // kernel, shape, causal flag and inputs, by the same rule as the kernel rows where both runs
  // recorded the spread of its samples; files from before that have none, and the threshold
  // alone decides (its run-to-run scatter on the H100 is ~2 %, kernels/NOTES.md).
  std::set<Key> prepared;
  const size_t matched = cmp.rows.size();
  for (size_t i = 0; i < matched; ++i) {
    const RowComparison& m = cmp.rows[i];
    if (!m.base || !m.cur || !m.base->prepare_ms || !m.cur->prepare_ms) continue;
    if (!(*m.base->prepare_ms > 0)) continue;  // no ratio to a zero or NaN base
    Key k = key_of(*m.base);
    std::get<kKeyDensity>(k) = 0;  // one prepare time per shape: any density
    if (!prepared.insert(k).second) continue;
    RowComparison rc = m;
    rc.prepare = true;
    rc.less_accurate = false;
    rc.delta = *m.cur->prepare_ms / *m.base->prepare_ms - 1.0;
    rc.noise = m.base->prepare_spread && m.cur->prepare_spread
                   ? std::hypot(*m.base->prepare_spread, *m.cur->prepare_spread)
                   : 0.0;
    rc.status = classify(rc.delta, rc.noise, options.threshold);
    cmp.rows.push_back(std::move(rc));
  }
  for (size_t i = 0; i < cur.rows.size(); ++i) {
    if (used[i]) continue;
    RowComparison rc;
    rc.cur = cur.rows[i];
    rc.status = Status::kNew;
    cmp.rows.push_back(std::move(rc));
  }
  std::stable_sort(
      cmp.rows.begin(), cmp.rows.end(),
      [](const RowComparison& a, const RowComparison& b) { return rank(a) < rank(b); });
  return cmp;
}

namespace {

std::string ms(const std::optional<Row>& r) {
  return r ? fmt::format("{:.4g}", r->time.median) : "-";
}
std::string tops(const std::optional<Row>& r) {
  return r ? fmt::format("{:.0f}", r->effective_tops()) : "-";
}
std::string acc(const std::optional<Row>& r) {
  return (r && r->rel_l1) ? fmt::format("{:.4f}", *r->rel_l1) : "-";
}

// A prepare row's noise: "-" where a run recorded no spread for it (the threshold alone decided).
std::string prepare_noise(const RowComparison& r) {
  return r.base->prepare_spread && r.cur->prepare_spread ? fmt::format("{:.1f}%", 100 * r.noise)
                                                         : "-";
}

bool clocks_apart(const RowComparison& r) {
  const std::optional<double> c = clock_change(r);
  return c && std::abs(*c) > kClockApart;
}

std::string status_cell(const RowComparison& r) {
  std::string s = status_label(r.status);
  if (r.less_accurate) s += " · 🔴 LESS ACCURATE";
  if (clocks_apart(r)) s += fmt::format(" · SM clock {:+.1f}%", 100 * *clock_change(r));
  return s;
}

struct Cells {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
};

Cells table_cells(const BenchComparison& cmp) {
  const bool accuracy = cmp.has_accuracy();
  Cells c;
  c.header = {"kernel", "shape B,H,Nq,Nk,D",  "causal", "density", "base ms", "new ms", "Δ",
              "noise",  "eff. TOPS base→new", "×dense"};
  if (accuracy) c.header.push_back("rel-L1 base→new");
  c.header.push_back("status");
  for (const RowComparison& r : cmp.rows) {
    const Row& any = r.any();
    const bool both = r.base && r.cur;
    if (r.prepare) {
      std::vector<std::string> line{any.label() + " · prepare",
                                    any.shape.str(),
                                    any.causal ? "yes" : "no",
                                    "-",
                                    fmt::format("{:.4g}", *r.base->prepare_ms),
                                    fmt::format("{:.4g}", *r.cur->prepare_ms),
                                    fmt::format("{:+.1f}%", 100 * r.delta),
                                    prepare_noise(r),
                                    "-",
                                    "-"};
      if (accuracy) line.push_back("-");
      line.push_back(status_cell(r));
      c.rows.push_back(std::move(line));
      continue;
    }
    std::optional<double> xdense = r.cur ? r.cur->speedup_vs(r.cur->dense_ms) : std::nullopt;
    std::vector<std::string> line{any.label(),
                                  any.shape.str(),
                                  any.causal ? "yes" : "no",
                                  fmt::format("{:g}", any.density),
                                  ms(r.base),
                                  ms(r.cur),
                                  both ? fmt::format("{:+.1f}%", 100 * r.delta) : "-",
                                  both ? fmt::format("{:.1f}%", 100 * r.noise) : "-",
                                  fmt::format("{}→{}", tops(r.base), tops(r.cur)),
                                  xdense ? fmt::format("{:.2f}", *xdense) : "-"};
    if (accuracy) {
      const bool any_acc = (r.base && r.base->rel_l1) || (r.cur && r.cur->rel_l1);
      std::string cell = any_acc ? fmt::format("{}→{}", acc(r.base), acc(r.cur)) : "-";
      if (r.less_accurate) {
        cell += fmt::format(" (+{:.0f}%)", 100 * (*r.cur->rel_l1 / *r.base->rel_l1 - 1));
      }
      line.push_back(cell);
    }
    line.push_back(status_cell(r));
    c.rows.push_back(std::move(line));
  }
  return c;
}

std::string build_name(const bench::Environment& e) { return e.git + bench::kernel_tag(e); }

// Results recorded with different forced Hopper kernels compare two kernels (an A/B run), not one
// build against its baseline: said above the table so nobody reads it as a regression check.
std::string kernel_note(const BenchComparison& cmp) {
  const std::string& b = cmp.base_env.sm90_kernel;
  const std::string& n = cmp.new_env.sm90_kernel;
  if (b == n) return {};
  auto say = [](const std::string& k) {
    return k.empty() ? std::string("each head dim's default") : "sm90." + k;
  };
  return fmt::format("Hopper kernels differ: base {}, new {}; the sm90 rows compare two kernels.",
                     say(b), say(n));
}

std::string env_line(const bench::Environment& e) {
  return fmt::format("git {} · {} · CUDA {} (driver {}) · torch {} · {} · {}", build_name(e),
                     e.gpu_name(), e.cuda_runtime.empty() ? "?" : e.cuda_runtime,
                     e.driver.empty() ? "?" : e.driver, e.torch.empty() ? "?" : e.torch,
                     e.host.empty() ? "?" : e.host, e.date.empty() ? "?" : e.date);
}

std::string summary_line(const BenchComparison& cmp) {
  std::string s =
      fmt::format("{} slower · {} faster · {} same · {} noisy · {} new · {} gone",
                  cmp.count(Status::kSlow), cmp.count(Status::kFast), cmp.count(Status::kSame),
                  cmp.count(Status::kNoisy), cmp.count(Status::kNew), cmp.count(Status::kGone));
  if (cmp.has_accuracy()) s += fmt::format(" · {} less accurate", cmp.count_less_accurate());
  return s;
}

std::string rule_line(const BenchComparison& cmp, const CompareOptions& o) {
  std::string s = fmt::format(
      "Rule: a change beyond max(±{:g}%, noise) is SLOW/FAST; noise = √(spread_base² + "
      "spread_new²), spread = IQR/median of the samples; NOISY = within the noise but the noise "
      "exceeds {:g}%.",
      100 * o.threshold, 100 * o.threshold);
  if (std::any_of(cmp.rows.begin(), cmp.rows.end(),
                  [](const RowComparison& r) { return r.prepare; })) {
    s += fmt::format(
        " A \"prepare\" row compares prediction + quantisation (one per shape), by the same "
        "rule where both runs recorded its spread; where one did not (files from before it was "
        "recorded, noise \"-\"), a change beyond ±{:g}% is SLOW/FAST.",
        100 * o.threshold);
  }
  if (cmp.has_accuracy()) {
    s += fmt::format(
        " A rel-L1 grown by more than max({:g}% of the base, {:g}) is LESS ACCURATE (a "
        "regression).",
        100 * o.accuracy_relative, o.accuracy_absolute);
  }
  if (const auto apart = std::count_if(cmp.rows.begin(), cmp.rows.end(), clocks_apart)) {
    s += fmt::format(
        " {} row{} ran at SM clocks more than {:g}% apart (\"SM clock\" in the status, as the "
        "probe measured it after the samples): the machine's state moved their Δ by about as "
        "much, whatever the code did.",
        apart, apart == 1 ? "" : "s", 100 * kClockApart);
  }
  return s;
}

}  // namespace

std::string render_markdown(const BenchComparison& cmp, const CompareOptions& options) {
  std::string out;
  out += fmt::format("## sparge report — {} vs {} — {}\n\n", build_name(cmp.new_env),
                     build_name(cmp.base_env), cmp.new_env.gpu_name());
  out += fmt::format("- base `{}`: {}\n", cmp.base_name, env_line(cmp.base_env));
  out += fmt::format("- new `{}`: {}\n\n", cmp.new_name, env_line(cmp.new_env));
  if (const std::string note = kernel_note(cmp); !note.empty()) out += note + "\n\n";
  out += rule_line(cmp, options) + "\n\n";
  out += fmt::format("**{}**{}\n\n", summary_line(cmp), cmp.failed(options) ? " — regression" : "");
  const Cells c = table_cells(cmp);
  out += "| " + fmt::format("{}", fmt::join(c.header, " | ")) + " |\n|";
  for (size_t i = 0; i < c.header.size(); ++i) out += "---|";
  out += "\n";
  for (const auto& line : c.rows) out += "| " + fmt::format("{}", fmt::join(line, " | ")) + " |\n";
  return out;
}

namespace {

// Effective TOPS vs density for every kernel x shape with >= 2 densities.
std::string tops_charts(const BenchComparison& cmp) {
  struct Series {
    std::vector<std::pair<double, double>> base, cur;
  };
  std::map<std::string, Series> groups;  // ordered by title: deterministic output
  for (const RowComparison& r : cmp.rows) {
    const Row& any = r.any();
    if (any.mask != "random" || r.prepare) continue;
    const std::string title =
        fmt::format("{} · {}{}", any.name, any.shape.str(), any.causal ? " · causal" : "");
    if (r.base) groups[title].base.emplace_back(r.base->density, r.base->effective_tops());
    if (r.cur) groups[title].cur.emplace_back(r.cur->density, r.cur->effective_tops());
  }
  std::string out;
  constexpr double W = 420, H = 260, L = 60, R = 20, T = 30, B = 40;
  for (auto& [title, s] : groups) {
    if (std::max(s.base.size(), s.cur.size()) < 2) continue;
    std::sort(s.base.begin(), s.base.end());
    std::sort(s.cur.begin(), s.cur.end());
    double ymax = 1;
    for (const auto* v : {&s.base, &s.cur}) {
      for (auto [x, y] : *v) ymax = std::max(ymax, y);
    }
    ymax *= 1.1;
    auto px = [&](double d) { return L + d * (W - L - R); };  // density 0..1
    auto py = [&](double y) { return H - B - y / ymax * (H - T - B); };
    out += fmt::format(
        "<figure><svg width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" role=\"img\">"
        "<text x=\"{}\" y=\"18\" font-size=\"12\">{}</text>",
        W, H, W, H, L, escape_markup(title));
    out += fmt::format(
        "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#888\"/>"
        "<line x1=\"{0}\" y1=\"{3}\" x2=\"{0}\" y2=\"{1}\" stroke=\"#888\"/>",
        L, H - B, W - R, T);
    for (double d : {0.0, 0.25, 0.5, 0.75, 1.0}) {
      out += fmt::format(
          "<text x=\"{:.1f}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{:g}</text>", px(d),
          H - B + 14, d);
    }
    for (int i = 0; i <= 4; ++i) {
      const double y = ymax * i / 4;
      out += fmt::format(
          "<text x=\"{}\" y=\"{:.1f}\" font-size=\"10\" text-anchor=\"end\">{:.0f}</text>", L - 4,
          py(y) + 3, y);
    }
    out += fmt::format(
        "<text x=\"{:.0f}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">density</text>",
        (L + W - R) / 2, H - 6);
    out += fmt::format(
        "<text x=\"12\" y=\"{:.0f}\" font-size=\"11\" transform=\"rotate(-90 12 {:.0f})\" "
        "text-anchor=\"middle\">effective TOPS</text>",
        (T + H - B) / 2, (T + H - B) / 2);
    auto poly = [&](const std::vector<std::pair<double, double>>& v, const char* color) {
      std::string pts;
      for (auto [x, y] : v) pts += fmt::format("{:.1f},{:.1f} ", px(x), py(y));
      std::string o = fmt::format(
          "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>", color, pts);
      for (auto [x, y] : v) {
        o += fmt::format(
            "<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"><title>{:g}: {:.0f} "
            "TOPS</title></circle>",
            px(x), py(y), color, x, y);
      }
      return o;
    };
    out += poly(s.base, "#999999") + poly(s.cur, "#1f6fd1");
    out += fmt::format(
        "<text x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"#999999\">base</text>"
        "<text x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"#1f6fd1\">new</text>",
        W - R - 60, T + 4, W - R - 30, T + 4);
    out += "</svg></figure>\n";
  }
  return out;
}

// Horizontal bars: speedup of new over base (base ms / new ms) per matched row.
std::string speedup_bars(const BenchComparison& cmp) {
  std::vector<std::pair<std::string, double>> bars;
  for (const RowComparison& r : cmp.rows) {
    if (!r.base || !r.cur || r.prepare) continue;
    const Row& a = *r.cur;
    bars.emplace_back(fmt::format("{} {}{} d={:g}", a.label(), a.shape.str(),
                                  a.causal ? " causal" : "", a.density),
                      r.base->time.median / a.time.median);
  }
  if (bars.empty()) return "";
  double vmax = 1.0;
  for (auto& b : bars) vmax = std::max(vmax, b.second);
  vmax *= 1.1;
  constexpr double W = 760, L = 380, R = 60, bar_h = 16, gap = 4, T = 20;
  const double H = T + bars.size() * (bar_h + gap) + 10;
  auto px = [&](double v) { return L + v / vmax * (W - L - R); };
  std::string out = fmt::format(
      "<figure><svg width=\"{}\" height=\"{:.0f}\" viewBox=\"0 0 {} {:.0f}\" role=\"img\">"
      "<text x=\"0\" y=\"14\" font-size=\"12\">speedup of new over base (base ms / new ms)</text>",
      W, H, W, H);
  for (size_t i = 0; i < bars.size(); ++i) {
    const double y = T + i * (bar_h + gap);
    const auto& [label, v] = bars[i];
    out += fmt::format(
        "<text x=\"{}\" y=\"{:.1f}\" font-size=\"10\" text-anchor=\"end\">{}</text>"
        "<rect x=\"{}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{}\" fill=\"{}\"/>"
        "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10\">{:.3f}×</text>",
        L - 6, y + 12, escape_markup(label), L, y, px(v) - L, bar_h, v >= 1 ? "#2e9e4f" : "#d13b3b",
        px(v) + 4, y + 12, v);
  }
  out += fmt::format(
      "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2:.0f}\" stroke=\"#333\" "
      "stroke-dasharray=\"3,3\"/>",
      px(1.0), T - 4, H - 6);
  out += "</svg></figure>\n";
  return out;
}

}  // namespace

std::string render_html(const BenchComparison& cmp, const CompareOptions& options) {
  std::string out =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<title>sparge report</title><style>"
      "body{font-family:system-ui,sans-serif;margin:2em;}"
      "table{border-collapse:collapse;font-size:13px;}"
      "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right;}"
      "td:first-child,td:nth-child(2){text-align:left;}"
      "tr.SLOW{background:#fde2e2;}tr.FAST{background:#e2f6e7;}tr.NOISY{background:#fff6d6;}"
      "figure{display:inline-block;margin:0.5em;}</style></head><body>\n";
  out += fmt::format(
      "<h2>sparge report — {} vs {} — {}</h2>\n", escape_markup(build_name(cmp.new_env)),
      escape_markup(build_name(cmp.base_env)), escape_markup(cmp.new_env.gpu_name()));
  if (const std::string note = kernel_note(cmp); !note.empty()) {
    out += fmt::format("<p><b>{}</b></p>\n", escape_markup(note));
  }
  out += fmt::format("<p>base <code>{}</code>: {}<br>new <code>{}</code>: {}</p>\n",
                     escape_markup(cmp.base_name), escape_markup(env_line(cmp.base_env)),
                     escape_markup(cmp.new_name), escape_markup(env_line(cmp.new_env)));
  out += fmt::format("<p>{}</p>\n<p><b>{}</b></p>\n", escape_markup(rule_line(cmp, options)),
                     escape_markup(summary_line(cmp)));
  out += tops_charts(cmp);
  out += speedup_bars(cmp);
  const Cells c = table_cells(cmp);
  out += "<table><thead><tr>";
  for (const auto& h : c.header) out += "<th>" + escape_markup(h) + "</th>";
  out += "</tr></thead><tbody>\n";
  for (size_t i = 0; i < c.rows.size(); ++i) {
    const std::string label = status_label(cmp.rows[i].status);
    // A less accurate row is a regression: red like SLOW.
    out += fmt::format("<tr class=\"{}\">", cmp.rows[i].less_accurate
                                                ? std::string("SLOW")
                                                : label.substr(label.find(' ') + 1));
    for (const auto& cell : c.rows[i]) out += "<td>" + escape_markup(cell) + "</td>";
    out += "</tr>\n";
  }
  out += "</tbody></table>\n</body></html>\n";
  return out;
}

}  // namespace sparge::report
