// Typed field access into parsed JSON for the readers of sparge's own JSON files (bench results,
// search traces): every fault is one line naming the file and the JSON path, exit 65.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "common/error.hpp"

namespace sparge {

class JsonFields {
 public:
  explicit JsonFields(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void bad(const std::string& path, const std::string& why) const {
    fail(ExitCode::kDataError, "{}: {}: {}", source_, path, why);
  }
  const nlohmann::json& at(const nlohmann::json& obj, const std::string& key,
                           const std::string& path) const {
    if (!obj.is_object()) bad(path, "expected an object");
    auto it = obj.find(key);
    if (it == obj.end()) bad(path + "." + key, "missing");
    return *it;
  }
  double number(const nlohmann::json& obj, const std::string& key, const std::string& path) const {
    const nlohmann::json& v = at(obj, key, path);
    if (!v.is_number()) bad(path + "." + key, "expected a number");
    return v.get<double>();
  }
  int64_t integer(const nlohmann::json& obj, const std::string& key,
                  const std::string& path) const {
    const nlohmann::json& v = at(obj, key, path);
    if (!v.is_number_integer()) bad(path + "." + key, "expected an integer");
    return v.get<int64_t>();
  }
  std::string text(const nlohmann::json& obj, const std::string& key,
                   const std::string& path) const {
    const nlohmann::json& v = at(obj, key, path);
    if (!v.is_string()) bad(path + "." + key, "expected a string");
    return v.get<std::string>();
  }
  bool boolean(const nlohmann::json& obj, const std::string& key, const std::string& path) const {
    const nlohmann::json& v = at(obj, key, path);
    if (!v.is_boolean()) bad(path + "." + key, "expected true or false");
    return v.get<bool>();
  }

 private:
  std::string source_;
};

}  // namespace sparge
