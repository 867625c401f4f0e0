// The value parsers of the configuration schema (config_schema.h).
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "mta/config_schema.h"

namespace peregrine::config_schema {

absl::Status Expected(absl::string_view what, const toml::node& got) {
  std::ostringstream os;
  got.visit([&os](auto&& v) { os << v; });
  return absl::InvalidArgumentError(absl::StrCat(
      "expected ", what, ", got ",
      Sv(toml::impl::node_type_friendly_names[static_cast<int>(got.type())]),
      " ", os.str()));
}

absl::StatusOr<std::string> GetString(const toml::node& node,
                                      absl::string_view what) {
  if (!node.is_string()) return Expected(what, node);
  return std::string(*node.value<std::string_view>());
}

// An array of strings. A lone string is refused: for a key that takes a
// list, a string is a sign the value was misunderstood (the [listen] keys,
// where one address is the usual case, take GetAddressList instead).
absl::StatusOr<std::vector<std::string>> GetStringList(const toml::node& node,
                                                       absl::string_view what) {
  std::vector<std::string> out;
  if (node.is_string()) {
    return Expected(absl::StrCat("a list of ", what, " in brackets: [\"",
                                 Sv(*node.value<std::string_view>()), "\"]"),
                    node);
  }
  const toml::array* array = node.as_array();
  if (array == nullptr) return Expected(absl::StrCat("a list of ", what), node);
  for (const toml::node& item : *array) {
    if (!item.is_string()) {
      return Expected(absl::StrCat("a list of ", what, " (strings)"), item);
    }
    out.push_back(std::string(*item.value<std::string_view>()));
  }
  return out;
}

absl::Status GetInt(const toml::node& node, int64_t min, int64_t max,
                    int* out) {
  std::string what = absl::StrCat("an integer from ", min, " to ", max);
  if (!node.is_integer()) return Expected(what, node);
  int64_t v = *node.value<int64_t>();
  if (v < min || v > max) return Expected(what, node);
  *out = static_cast<int>(v);
  return absl::OkStatus();
}

// "30s", "5m", "2h", "500ms", "1h30m", "5d".
absl::Status GetDuration(const toml::node& node, absl::Duration min,
                         absl::Duration max, absl::Duration* out) {
  std::string what = absl::StrCat("a duration from ", absl::FormatDuration(min),
                                  " to ", absl::FormatDuration(max),
                                  " such as \"30s\", \"5m\", \"2h\"");
  if (!node.is_string()) return Expected(what, node);
  std::string text(*node.value<std::string_view>());
  absl::Duration d;
  int64_t days = 0;
  if (!text.empty() && text.back() == 'd' &&
      absl::SimpleAtoi(absl::string_view(text).substr(0, text.size() - 1),
                       &days)) {
    d = absl::Hours(24 * days);
  } else if (!absl::ParseDuration(text, &d)) {
    return Expected(what, node);
  }
  if (d < min || d > max) return Expected(what, node);
  *out = d;
  return absl::OkStatus();
}

// "512MiB", "1GiB", "100MB", "4096" (bytes).
absl::Status GetSize(const toml::node& node, uint64_t min, uint64_t max,
                     uint64_t* out) {
  std::string what = absl::StrCat("a size from ", min, " to ", max,
                                  " bytes such as \"512MiB\" or \"2GB\"");
  if (!node.is_string()) return Expected(what, node);
  std::string text(*node.value<std::string_view>());
  size_t digits = 0;
  while (digits < text.size() &&
         (absl::ascii_isdigit(text[digits]) || text[digits] == '.')) {
    ++digits;
  }
  double number = 0;
  if (!absl::SimpleAtod(text.substr(0, digits), &number)) {
    return Expected(what, node);
  }
  std::string unit = absl::AsciiStrToLower(
      absl::StripAsciiWhitespace(absl::string_view(text).substr(digits)));
  static const std::pair<const char*, double> kUnits[] = {
      {"", 1},      {"b", 1},
      {"kb", 1e3},  {"kib", 1024.0},
      {"mb", 1e6},  {"mib", 1048576.0},
      {"gb", 1e9},  {"gib", 1073741824.0},
      {"tb", 1e12}, {"tib", 1099511627776.0}};
  for (const auto& [name, factor] : kUnits) {
    if (unit == name) {
      double bytes = number * factor;
      if (bytes < static_cast<double>(min) ||
          bytes > static_cast<double>(max)) {
        return Expected(what, node);
      }
      *out = static_cast<uint64_t>(bytes);
      return absl::OkStatus();
    }
  }
  return Expected(what, node);
}

absl::Status GetBool(const toml::node& node, bool* out) {
  if (!node.is_boolean()) return Expected("true or false", node);
  *out = *node.value<bool>();
  return absl::OkStatus();
}

}  // namespace peregrine::config_schema
