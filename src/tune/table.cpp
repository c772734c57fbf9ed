#include "tune/table.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "common/error.hpp"

namespace sparge::tune {

namespace {
std::string csv_cell(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}
}  // namespace

std::string Table::render(const std::string& format) const {
  std::string out;
  if (format == "csv") {
    auto line = [&](const std::vector<std::string>& cells) {
      for (size_t i = 0; i < cells.size(); ++i) out += (i ? "," : "") + csv_cell(cells[i]);
      out += "\n";
    };
    line(columns);
    for (const auto& r : rows) line(r);
    return out;
  }
  if (format == "md") {
    auto line = [&](const std::vector<std::string>& cells) {
      out += "|";
      for (const auto& c : cells) out += " " + c + " |";
      out += "\n";
    };
    line(columns);
    out += "|";
    for (size_t i = 0; i < columns.size(); ++i) out += i ? "---:|" : "---|";
    out += "\n";
    for (const auto& r : rows) line(r);
    return out;
  }
  if (format != "text")
    fail(ExitCode::kUsage, "--format {}: expected text, json, md or csv", format);
  std::vector<size_t> w(columns.size());
  for (size_t i = 0; i < columns.size(); ++i) w[i] = columns[i].size();
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], r[i].size());
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string l;
    for (size_t i = 0; i < cells.size(); ++i) {
      l += i ? "  " : "";
      l += i == 0 ? fmt::format("{:<{}}", cells[i], w[i]) : fmt::format("{:>{}}", cells[i], w[i]);
    }
    while (!l.empty() && l.back() == ' ') l.pop_back();
    out += l + "\n";
  };
  line(columns);
  for (const auto& r : rows) line(r);
  return out;
}

}  // namespace sparge::tune
