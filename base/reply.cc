#include "base/reply.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace peregrine {

std::string Reply::ToString() const {
  return absl::StrCat(code, enhanced.empty() ? "" : " ", enhanced,
                      text.empty() ? "" : " ", text);
}

bool IsEnhancedStatus(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, '.');
  if (parts.size() != 3) return false;
  if (parts[0] != "2" && parts[0] != "4" && parts[0] != "5") return false;
  for (size_t i = 1; i < 3; ++i) {
    if (parts[i].empty() || parts[i].size() > 3) return false;
    for (char c : parts[i]) {
      if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
    }
  }
  return true;
}

Reply Reply::Parse(absl::string_view line) {
  Reply r;
  if (line.size() < 3 || !absl::ascii_isdigit(line[0]) ||
      !absl::ascii_isdigit(line[1]) || !absl::ascii_isdigit(line[2]) ||
      (line.size() > 3 && line[3] != ' ')) {
    r.text = std::string(line);
    return r;
  }
  r.code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
  absl::string_view rest = line.substr(std::min<size_t>(4, line.size()));
  size_t space = rest.find(' ');
  absl::string_view first = rest.substr(0, space);
  if (IsEnhancedStatus(first)) {
    r.enhanced = std::string(first);
    rest = space == absl::string_view::npos ? "" : rest.substr(space + 1);
  }
  r.text = std::string(rest);
  return r;
}

}  // namespace peregrine
