#include "cli/arg_lists.hpp"

#include <exception>
#include <set>
#include <sstream>
#include <stdexcept>

#include "common/error.hpp"

namespace sparge::cli {

std::vector<int> parse_index_list(const std::string& text, const std::string& flag) {
  std::vector<int> out;
  std::stringstream ss(text);
  std::string item;
  auto number = [&](const std::string& s) {
    size_t used = 0;
    int v = -1;
    try {
      v = std::stoi(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != s.size() || v < 0) {
      fail(ExitCode::kUsage, "{} '{}': expected non-negative indices like 0,2,5-7", flag, text);
    }
    return v;
  };
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    auto dash = item.find('-');
    if (dash == std::string::npos) {
      out.push_back(number(item));
    } else {
      int a = number(item.substr(0, dash)), b = number(item.substr(dash + 1));
      if (b < a) fail(ExitCode::kUsage, "{} '{}': range {} is backwards", flag, text, item);
      for (int i = a; i <= b; ++i) out.push_back(i);
    }
  }
  if (out.empty()) fail(ExitCode::kUsage, "{} '{}': no index given", flag, text);
  std::set<int> uniq(out.begin(), out.end());
  return {uniq.begin(), uniq.end()};
}

std::vector<float> parse_theta_grid(const std::string& text) {
  std::vector<float> grid;
  try {
    if (text.find(':') != std::string::npos) {
      float a = 0, b = 0, step = 0;
      char c1 = 0, c2 = 0;
      std::istringstream ss(text);
      if (!(ss >> a >> c1 >> b >> c2 >> step) || c1 != ':' || c2 != ':' || !(step > 0)) {
        throw std::invalid_argument("bad range");
      }
      for (int i = 0;; ++i) {
        // Computed from the index, not accumulated, so every grid point is exact when the step
        // is a binary fraction.
        float t = a + static_cast<float>(i) * step;
        if (t >= b - step * 1e-3f) break;
        grid.push_back(t);
      }
    } else {
      std::stringstream ss(text);
      std::string item;
      while (std::getline(ss, item, ',')) {
        size_t used = 0;
        grid.push_back(std::stof(item, &used));
        if (used != item.size()) throw std::invalid_argument("bad value");
      }
    }
  } catch (const std::exception&) {
    fail(ExitCode::kUsage, "--theta-grid '{}': expected start:stop:step or a,b,c", text);
  }
  return grid;
}

std::pair<float, float> parse_range(const std::string& text, const std::string& flag) {
  float a = 0, b = 0;
  char comma = 0;
  std::istringstream ss(text);
  if (!(ss >> a >> comma >> b) || comma != ',') {
    fail(ExitCode::kUsage, "{} '{}': expected MIN,MAX", flag, text);
  }
  return {a, b};
}

std::pair<int, int> parse_shard(const std::string& text) {
  int i = -1, n = 0;
  char slash = 0, rest = 0;
  std::istringstream in(text);
  if (!(in >> i >> slash >> n) || slash != '/' || (in >> rest) || n < 1 || i < 0 || i >= n)
    fail(ExitCode::kUsage, "--shard '{}': expected I/N with 0 <= I < N, e.g. 0/4", text);
  return {i, n};
}

std::vector<int> parse_devices(const std::string& text, int count) {
  std::vector<int> out;
  if (text == "all") {
    for (int i = 0; i < count; ++i) out.push_back(i);
    return out;
  }
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    int d = -1;
    try {
      size_t used = 0;
      d = std::stoi(item, &used);
      if (used != item.size()) d = -1;
    } catch (const std::exception&) {
      d = -1;
    }
    if (d < 0) fail(ExitCode::kUsage, "--devices '{}': '{}' is not a device index", text, item);
    if (count > 0 && d >= count) {
      fail(ExitCode::kUsage, "--devices '{}': device {} not visible ({} device(s))", text, d,
           count);
    }
    for (int seen : out) {
      if (seen == d) fail(ExitCode::kUsage, "--devices '{}': device {} listed twice", text, d);
    }
    out.push_back(d);
  }
  if (out.empty()) fail(ExitCode::kUsage, "--devices '{}': no device given", text);
  return out;
}

}  // namespace sparge::cli
