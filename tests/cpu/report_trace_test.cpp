// `sparge report --trace TRACE.json [TUNED.yaml] --svg PLOT.svg`: the search trace of a tuned
// config as one SVG panel per head. The SVG is parsed back (well-formed, one panel per head, the
// budget line and every point where the axes put them, the chosen point ringed, dense heads with
// their reason); trace validation and the CLI end to end on a tuned synthetic dump.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "config/tuned.hpp"
#include "report/trace_plot.hpp"
#include "support/cli_harness.hpp"
#include "synth/synth.hpp"

namespace fs = std::filesystem;
using namespace sparge;
using nlohmann::json;

namespace {

fs::path tmp_dir() { return test_support::scratch_dir("report_trace"); }

test_support::CliResult run(const std::string& args) {
  return test_support::run_sparge("--no-progress " + args, tmp_dir());
}

struct Element {
  std::string tag;
  std::map<std::string, std::string> attr;
  int depth = 0;     // nesting depth at which it opens (svg = 0)
  int panel = -1;    // index of the enclosing <g class="panel">, -1 outside panels
  std::string text;  // text directly after the opening tag (for <text>)
};

// A small SVG reader: every element with its attributes; fails the test when a tag is not closed
// in order (so the document is well-formed XML as far as elements go).
std::vector<Element> parse_svg(const std::string& svg) {
  std::vector<Element> out;
  std::vector<std::string> stack;
  int panel = -1, panels = 0;
  std::vector<bool> is_panel;
  const std::regex tag_re(R"(<(/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"]*")*)\s*(/?)>)");
  const std::regex attr_re(R"re(([\w:-]+)="([^"]*)")re");
  size_t pos = svg.find("<svg");
  EXPECT_NE(pos, std::string::npos) << "no <svg> root";
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u) << "no XML declaration";
  auto begin = std::sregex_iterator(svg.begin() + static_cast<long>(pos), svg.end(), tag_re);
  for (auto it = begin; it != std::sregex_iterator(); ++it) {
    const auto& m = *it;
    const bool closing = m[1].length() > 0, self = m[4].length() > 0;
    const std::string tag = m[2];
    if (closing) {
      EXPECT_FALSE(stack.empty()) << "</" << tag << "> without an opening tag";
      if (stack.empty()) break;
      EXPECT_EQ(stack.back(), tag) << "</" << tag << "> closes <" << stack.back() << ">";
      stack.pop_back();
      if (is_panel.back()) panel = -1;
      is_panel.pop_back();
      continue;
    }
    Element e;
    e.tag = tag;
    e.depth = static_cast<int>(stack.size());
    const std::string attrs = m[3];
    for (auto a = std::sregex_iterator(attrs.begin(), attrs.end(), attr_re);
         a != std::sregex_iterator(); ++a) {
      e.attr[(*a)[1]] = (*a)[2];
    }
    const bool opens_panel = tag == "g" && e.attr["class"] == "panel";
    if (opens_panel) panel = panels++;
    e.panel = panel;
    const size_t after = static_cast<size_t>(m.position(0) + m.length(0)) + pos;
    e.text = svg.substr(after, svg.find('<', after) - after);
    out.push_back(e);
    if (!self) {
      stack.push_back(tag);
      is_panel.push_back(opens_panel);
    }
  }
  EXPECT_TRUE(stack.empty()) << "unclosed <" << (stack.empty() ? "" : stack.back()) << ">";
  return out;
}

bool has_class(const Element& e, const std::string& c) {
  auto it = e.attr.find("class");
  if (it == e.attr.end()) return false;
  std::string s = " " + it->second + " ";
  return s.find(" " + c + " ") != std::string::npos;
}

double attr_d(const Element& e, const std::string& k) {
  auto it = e.attr.find(k);
  EXPECT_NE(it, e.attr.end()) << "<" << e.tag << "> has no " << k;
  return it == e.attr.end() ? NAN : std::stod(it->second);
}

json point(float tau, float theta, std::optional<float> lambda, double pred, double s1, double s12,
           bool pass) {
  return {{"mode", "cdf"},
          {"tau", tau},
          {"theta", theta},
          {"lambda", lambda ? json(*lambda) : json(nullptr)},
          {"stage", lambda ? "stage12" : "stage1"},
          {"error", {pred * 0.8, pred * 0.7}},
          {"error_worst", pred * 0.8},
          {"predicted", pred},
          {"sparsity_stage1", s1},
          {"sparsity_stage12", s12},
          {"sparsity_stage1_per_sample", {s1, s1}},
          {"pass", pass}};
}

json chosen(float tau, float theta, std::optional<float> lambda) {
  return {{"mode", "cdf"},
          {"tau", tau},
          {"theta", theta},
          {"lambda", lambda ? json(*lambda) : json(nullptr)}};
}

// Three heads: 0 sparse (chosen τ 0.9, λ -2), 1 dense because its best passing point is below
// min_sparsity, 2 dense because even the dense mask misses l1 (layer 1).
json sample_trace() {
  json heads = json::array();
  heads.push_back({{"layer", 0},
                   {"head", 0},
                   {"sparse", true},
                   {"chosen", chosen(0.9f, -1.0f, -2.0f)},
                   {"expected_stage1", 0.045},
                   {"expected_stage12", 0.055},
                   {"points",
                    {point(1.0f, -1.0f, {}, 0.01, 0.0, 0.0, true),
                     point(0.5f, -1.0f, {}, 0.2, 0.6, 0.6, false),  // beyond the x axis
                     point(0.9f, -1.0f, {}, 0.045, 0.3, 0.3, true),
                     point(0.8f, -1.0f, {}, 0.07, 0.4, 0.4, false),
                     point(0.9f, -1.0f, -2.0f, 0.055, 0.3, 0.35, true),
                     point(0.9f, -1.0f, -1.0f, 0.08, 0.3, 0.45, false)}}});
  heads.push_back({{"layer", 0},
                   {"head", 1},
                   {"sparse", false},
                   {"chosen", chosen(1.0f, 1.0f, {})},
                   {"expected_stage1", 0.01},
                   {"expected_stage12", 0.01},
                   {"points",
                    {point(1.0f, -1.0f, {}, 0.01, 0.0, 0.0, true),
                     point(0.99f, -1.0f, {}, 0.03, 0.02, 0.02, true),
                     point(0.98f, -1.0f, {}, 0.06, 0.04, 0.04, false),
                     point(1.0f, 1.0f, {}, 0.01, 0.0, 0.0, true)}}});
  heads.push_back({{"layer", 1},
                   {"head", 0},
                   {"sparse", false},
                   {"chosen", chosen(1.0f, 1.0f, {})},
                   {"expected_stage1", 0.08},
                   {"expected_stage12", 0.08},
                   {"points",
                    {point(1.0f, -1.0f, {}, 0.09, 0.0, 0.0, false),
                     point(1.0f, 1.0f, {}, 0.08, 0.0, 0.0, false)}}});
  return {{"schema", "sparge.tune-trace"},
          {"schema_version", 1},
          {"dump", "d.h5"},
          {"tuned", "t.yaml"},
          {"budget", {{"l1", 0.05}, {"l2", 0.06}}},
          {"holdout", "spread"},
          {"spread_k", 2.0},
          {"margin", 0.0},
          {"min_sparsity", 0.05},
          {"permutation", "none"},
          {"heads", heads}};
}

fs::path write_json(const json& j, const std::string& name) {
  const auto p = tmp_dir() / name;
  std::ofstream(p) << j.dump(1);
  return p;
}

}  // namespace

TEST(ReportTrace, SvgHasOnePanelPerHeadWithPointsWhereTheAxesPutThem) {
  const auto doc = report::read_trace(write_json(sample_trace(), "t.json"));
  const auto plot = report::render_trace_plot(doc, {}, "t.json");
  EXPECT_EQ(plot.plotted, 3);
  EXPECT_TRUE(plot.note.empty());
  const auto els = parse_svg(plot.svg);
  ASSERT_FALSE(els.empty());
  const Element& root = els.front();
  ASSERT_EQ(root.tag, "svg");
  const double x0 = attr_d(root, "data-plot-x"), y0 = attr_d(root, "data-plot-y");
  const double w = attr_d(root, "data-plot-w"), h = attr_d(root, "data-plot-h");
  const double xmax = attr_d(root, "data-xmax"), ymax = attr_d(root, "data-ymax");
  EXPECT_DOUBLE_EQ(xmax, 2 * 0.06);
  // The largest sparsity inside the x range is 0.45 (the point of sparsity 0.6 has error 0.2).
  EXPECT_DOUBLE_EQ(ymax, 0.5);
  auto px = [&](double e) { return x0 + std::min(e, xmax) / xmax * w; };
  auto py = [&](double s) { return y0 + h - std::min(s, ymax) / ymax * h; };

  std::vector<const Element*> panels;
  for (const auto& e : els) {
    if (e.tag == "g" && has_class(e, "panel")) panels.push_back(&e);
  }
  ASSERT_EQ(panels.size(), 3u);
  const json trace = sample_trace();
  const json& heads = trace["heads"];
  for (size_t p = 0; p < panels.size(); ++p) {
    EXPECT_EQ(std::stoi(panels[p]->attr.at("data-layer")), heads[p]["layer"].get<int>());
    EXPECT_EQ(std::stoi(panels[p]->attr.at("data-head")), heads[p]["head"].get<int>());
    int l1_lines = 0, l2_lines = 0, pts = 0, chosen_s1 = 0, reasons = 0, dense_frames = 0;
    for (const auto& e : els) {
      if (e.panel != static_cast<int>(p)) continue;
      if (has_class(e, "budget-l1")) {
        ++l1_lines;
        EXPECT_NEAR(attr_d(e, "x1"), px(0.05), 0.01);
        EXPECT_NEAR(attr_d(e, "x2"), px(0.05), 0.01);
      }
      if (has_class(e, "budget-l2")) {
        ++l2_lines;
        EXPECT_NEAR(attr_d(e, "x1"), px(0.06), 0.01);
      }
      if (has_class(e, "pt")) {
        ++pts;
        const double err = attr_d(e, "data-error"), sp = attr_d(e, "data-sparsity");
        const double cx = e.tag == "circle" ? attr_d(e, "cx") : attr_d(e, "x") + 2.5;
        const double cy = e.tag == "circle" ? attr_d(e, "cy") : attr_d(e, "y") + 2.5;
        EXPECT_NEAR(cx, px(err), 0.01);
        EXPECT_NEAR(cy, py(sp), 0.01);
        EXPECT_EQ(has_class(e, "clipped"), err > xmax || sp > ymax);
        EXPECT_EQ(e.tag == "rect", has_class(e, "s12")) << "stage 1+2 points are squares";
      }
      if (has_class(e, "chosen") && has_class(e, "s1")) ++chosen_s1;
      if (has_class(e, "reason")) ++reasons;
      if (has_class(e, "frame") && has_class(e, "dense")) ++dense_frames;
    }
    EXPECT_EQ(l1_lines, 1) << "panel " << p;
    EXPECT_EQ(l2_lines, 1) << "panel " << p;
    EXPECT_EQ(pts, static_cast<int>(heads[p]["points"].size())) << "panel " << p;
    const bool sparse = heads[p]["sparse"].get<bool>();
    EXPECT_EQ(dense_frames, sparse ? 0 : 1) << "panel " << p;
    EXPECT_EQ(reasons > 0, !sparse) << "panel " << p;
    EXPECT_EQ(chosen_s1, 1) << "panel " << p << ": the chosen point is ringed once";
  }
  // Head 0: passing and failing points differ in class; the ring sits on (0.045, 0.3).
  int pass = 0, fail = 0;
  for (const auto& e : els) {
    if (e.panel != 0) continue;
    if (has_class(e, "pt")) (has_class(e, "pass") ? pass : fail)++;
    if (has_class(e, "chosen") && has_class(e, "s1")) {
      EXPECT_NEAR(attr_d(e, "cx"), px(0.045), 0.01);
      EXPECT_NEAR(attr_d(e, "cy"), py(0.3), 0.01);
    }
    if (has_class(e, "chosen") && has_class(e, "s12")) {
      EXPECT_NEAR(attr_d(e, "cx"), px(0.055), 0.01);
      EXPECT_NEAR(attr_d(e, "cy"), py(0.35), 0.01);
    }
  }
  EXPECT_EQ(pass, 3);
  EXPECT_EQ(fail, 3);
  // The reasons name the cause: below min_sparsity; dense mask over l1.
  std::string r1, r2;
  for (const auto& e : els) {
    if (has_class(e, "reason")) (e.panel == 1 ? r1 : r2) += e.text + " ";
  }
  EXPECT_NE(r1.find("min-sparsity"), std::string::npos) << r1;
  EXPECT_NE(r1.find("0.0200"), std::string::npos) << "best passing sparsity: " << r1;
  EXPECT_NE(r2.find("quantisation"), std::string::npos) << r2;
}

TEST(ReportTrace, DenseReasons) {
  auto j = sample_trace();
  auto doc = report::read_trace(write_json(j, "r.json"));
  EXPECT_EQ(report::dense_reason(doc.heads[0], doc), "");
  EXPECT_NE(report::dense_reason(doc.heads[1], doc).find("< min-sparsity 0.05"), std::string::npos);
  // No passing stage-1 point at all: the lowest predicted error is named.
  for (auto& p : j["heads"][1]["points"]) {
    if (p["theta"].get<float>() != 1.0f) p["pass"] = false;
  }
  doc = report::read_trace(write_json(j, "r2.json"));
  const auto reason = report::dense_reason(doc.heads[1], doc);
  EXPECT_NE(reason.find("no threshold passes"), std::string::npos) << reason;
  EXPECT_NE(reason.find("0.0100"), std::string::npos) << reason;
}

TEST(ReportTrace, MarkdownGivesHeadroomToTheBudget) {
  const auto doc = report::read_trace(write_json(sample_trace(), "m.json"));
  const auto plot = report::render_trace_plot(doc, {}, "m.json");
  // Row of head 0: predicted l1 0.045 -> headroom 0.0050; l2 0.055 -> 0.0050.
  EXPECT_NE(plot.markdown.find("| 0 | 0 | sparse | 6 | 0.3000 | 0.0450 | 0.0050 | 0.3500 | "
                               "0.0550 | 0.0050 | - |"),
            std::string::npos)
      << plot.markdown;
  EXPECT_NE(plot.markdown.find("| 1 | 0 | dense | 2 |"), std::string::npos) << plot.markdown;
}

TEST(ReportTrace, PanelCapAndLayerSelection) {
  const auto doc = report::read_trace(write_json(sample_trace(), "c.json"));
  report::TracePlotOptions o;
  o.max_panels = 2;
  auto plot = report::render_trace_plot(doc, o, "c.json");
  EXPECT_EQ(plot.plotted, 2);
  EXPECT_EQ(plot.selected, 3);
  EXPECT_NE(plot.note.find("plotted 2 of 3"), std::string::npos) << plot.note;
  int panels = 0;
  for (const auto& e : parse_svg(plot.svg)) panels += e.tag == "g" && has_class(e, "panel");
  EXPECT_EQ(panels, 2);
  o = {};
  o.layers = std::vector<int>{1};
  plot = report::render_trace_plot(doc, o, "c.json");
  EXPECT_EQ(plot.plotted, 1);
  o.layers = std::vector<int>{7};
  try {
    report::render_trace_plot(doc, o, "c.json");
    ADD_FAILURE() << "no head selected, no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ExitCode::kUsage);
  }
}

TEST(ReportTrace, BadTraceFilesAreDataErrors) {
  auto code_of = [](const fs::path& p) {
    try {
      report::read_trace(p);
    } catch (const Error& e) {
      return std::make_pair(e.code(), std::string(e.what()));
    }
    return std::make_pair(ExitCode::kOk, std::string());
  };
  EXPECT_EQ(code_of(tmp_dir() / "absent.json").first, ExitCode::kNoInput);
  std::ofstream(tmp_dir() / "text.json") << "not json";
  EXPECT_EQ(code_of(tmp_dir() / "text.json").first, ExitCode::kDataError);
  auto j = sample_trace();
  j["schema"] = "sparge.bench";
  EXPECT_EQ(code_of(write_json(j, "s.json")).first, ExitCode::kDataError);
  j = sample_trace();
  j["heads"][1]["points"][2].erase("predicted");
  const auto [code, msg] = code_of(write_json(j, "p.json"));
  EXPECT_EQ(code, ExitCode::kDataError);
  EXPECT_NE(msg.find("$.heads[1].points[2].predicted: missing"), std::string::npos) << msg;
  j = sample_trace();
  j["heads"][0]["chosen"]["tau"] = "x";
  EXPECT_EQ(code_of(write_json(j, "t.json")).first, ExitCode::kDataError);
}

// End to end: tune with --trace, then plot it against the config it belongs to.
TEST(ReportTrace, CliPlotsTheTraceOfATunedConfig) {
  synth::Options o;
  o.kind = synth::Kind::kVideo;
  o.layers = 1;
  o.samples = 2;
  o.heads = 3;
  o.grid = std::array<int, 3>{2, 16, 16};
  o.head_dim = 64;
  o.seed = 7;
  const auto dump = tmp_dir() / "small.h5";
  synth::write_dump(o, dump);
  const auto yaml = tmp_dir() / "t.yaml", trace = tmp_dir() / "trace.json",
             svg = tmp_dir() / "plot.svg";
  auto t = run(fmt::format("tune {} -o {} --jobs 2 --trace {}", dump.string(), yaml.string(),
                           trace.string()));
  ASSERT_EQ(t.code, 0) << t.err;
  const auto tj = json::parse(test_support::slurp(trace));
  EXPECT_EQ(tj.at("min_sparsity").get<double>(), 0.05) << "the trace records min_sparsity";
  auto r = run(
      fmt::format("report {} --trace {} --svg {}", yaml.string(), trace.string(), svg.string()));
  ASSERT_EQ(r.code, 0) << r.err;
  const auto cfg = config::read_tuned(yaml);
  int panels = 0;
  for (const auto& e : parse_svg(test_support::slurp(svg))) {
    panels += e.tag == "g" && has_class(e, "panel");
  }
  EXPECT_EQ(panels, cfg.layers.at(0).heads());
  EXPECT_NE(r.out.find("| layer | head | status |"), std::string::npos) << r.out;

  // A config of another run (other budget) is not what the trace describes: exit 65.
  const auto other = tmp_dir() / "other.yaml";
  ASSERT_EQ(
      run(fmt::format("tune {} -o {} --jobs 2 --l1 0.06 --l2 0.07", dump.string(), other.string()))
          .code,
      0);
  r = run(fmt::format("report {} --trace {} --svg {}", other.string(), trace.string(),
                      (tmp_dir() / "x.svg").string()));
  EXPECT_EQ(r.code, 65) << r.err;
  EXPECT_FALSE(fs::exists(tmp_dir() / "x.svg")) << "nothing written on a mismatch";
  // Usage: --svg without --trace; two configs with --trace; the trace as its own output.
  EXPECT_EQ(run(fmt::format("report {} {} --svg {}", yaml.string(), other.string(),
                            (tmp_dir() / "y.svg").string()))
                .code,
            2);
  EXPECT_EQ(
      run(fmt::format("report {} {} --trace {}", yaml.string(), other.string(), trace.string()))
          .code,
      2);
  EXPECT_NE(run(fmt::format("report --trace {} --svg {}", trace.string(), trace.string())).code, 0);
  EXPECT_EQ(run("report").code, 2);
}
