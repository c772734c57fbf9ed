// Tabular results of `sparge tune` / `sparge eval` on stdout in text, Markdown or CSV (JSON is
// built by the commands with nlohmann_json, with typed values).
#pragma once

#include <string>
#include <vector>

namespace sparge::tune {

struct Table {
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;
  // format: "text" (aligned columns), "md" (GitHub table) or "csv" (RFC 4180 quoting).
  std::string render(const std::string& format) const;
};

}  // namespace sparge::tune
