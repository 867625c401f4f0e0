// Own domains' inputs on any bytes: an aliases file (mta/local/aliases.h)
// and an SRS address from the network (mta/local/srs.h). Never crashes or
// hangs; a file that parses is written back to one that parses the same;
// resolving any address ends (loops are errors); SRS addresses of our own
// making always come back to what they stood for.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "mta/local/aliases.h"
#include "mta/local/srs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace peregrine::local;
  std::string in(reinterpret_cast<const char*>(data), size);
  const absl::Time now = absl::FromUnixSeconds(1795780800);
  SrsOptions srs{"own.test", "0123456789abcdef0123456789abcdef", 21};

  // The bytes as an address: reversed (mostly refused), and forwarded.
  (void)SrsReverse(srs, in, now);
  (void)SrsReverse(srs, absl::StrCat(in, "@own.test"), now);
  if (PlainMailbox(in)) {
    std::string there = SrsForward(srs, in, now);
    if (there != in) {
      auto back = SrsReverse(srs, there, now);
      // SRS0 comes back to the sender; SRS1 to the previous hop's SRS0.
      if (!back.ok()) abort();
    }
  }

  auto file = ParseAliases(in, "own.test", "fuzz");
  if (!file.ok()) return 0;
  auto again = ParseAliases(FormatAliases(*file), "own.test", "again");
  if (!again.ok() || again->aliases.size() != file->aliases.size()) abort();
  for (const auto& [user, alias] : file->aliases) {
    if (again->aliases.at(user).targets != alias.targets) abort();
  }
  AliasTable table;
  table["own.test"] = std::move(*file);
  table["two.test"].domain = "two.test";
  for (const auto& [user, alias] : table["own.test"].aliases) {
    (void)Resolve(table, absl::StrCat(user == "*" ? "x" : user, "@own.test"));
    for (const std::string& t : alias.targets) {
      (void)Resolve(table, t.find('@') == std::string::npos
                               ? absl::StrCat(t, "@own.test")
                               : t);
    }
  }
  return 0;
}
