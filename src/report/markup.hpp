// Text for HTML and SVG output (the report's HTML page and the search-trace plot).
#pragma once

#include <string>

namespace sparge::report {

// s with &, <, > and " as entities: safe inside element text and double-quoted attributes of
// HTML and XML (SVG) alike.
inline std::string escape_markup(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

}  // namespace sparge::report
