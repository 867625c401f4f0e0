#include "mta/local/aliases.h"

#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace peregrine::local {
namespace {

constexpr int kMaxDepth = 10;

bool PlainUser(absl::string_view user) {
  if (user.empty() || user.size() > 64) return false;
  for (unsigned char c : user) {
    if (c <= 32 || c == 127 || c == '<' || c == '>' || c == '@' || c == ':' ||
        c == ',' || c == '#') {
      return false;
    }
  }
  return true;
}

struct Walk {
  const AliasTable& table;
  Resolution out;
  std::set<std::string> seen;
};

std::string Lower(absl::string_view s) { return absl::AsciiStrToLower(s); }

// The alias that takes `user` at `file`: exact, without "+suffix", or "*".
const Alias* Find(const AliasFile& file, const std::string& user) {
  if (auto it = file.aliases.find(user); it != file.aliases.end()) {
    return &it->second;
  }
  if (size_t plus = user.find('+'); plus != std::string::npos && plus > 0) {
    if (auto it = file.aliases.find(user.substr(0, plus));
        it != file.aliases.end()) {
      return &it->second;
    }
  }
  if (auto it = file.aliases.find("*"); it != file.aliases.end()) {
    return &it->second;
  }
  return nullptr;
}

absl::Status Visit(Walk& w, const std::string& address,
                   std::vector<std::string>& path) {
  size_t at = address.rfind('@');
  std::string domain = Lower(address.substr(at + 1));
  auto file = w.table.find(domain);
  if (file == w.table.end()) {
    std::string lowered = Lower(address);
    if (w.seen.insert(lowered).second) {
      w.out.targets.push_back(address);
      path.push_back(address);
      w.out.paths.push_back(absl::StrJoin(path, " → "));
      path.pop_back();
    }
    return absl::OkStatus();
  }
  for (const std::string& p : path) {
    if (absl::EqualsIgnoreCase(p, address)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the aliases loop: ", absl::StrJoin(path, " → "), " → ", address,
          "; break the loop in the aliases file of ", domain));
    }
  }
  if (path.size() >= kMaxDepth) {
    return absl::FailedPreconditionError(
        absl::StrCat("aliases nest deeper than ", kMaxDepth, ": ",
                     absl::StrJoin(path, " → "), "; shorten the chain"));
  }
  const Alias* alias = Find(file->second, Lower(address.substr(0, at)));
  if (alias == nullptr) {
    if (path.empty()) {
      return absl::NotFoundError(
          absl::StrCat("no alias takes ", address, " (", domain,
                       " is a local domain; `peregrine alias add` makes one)"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat(path.back(), " forwards to ", address,
                     ", which no alias takes: add one, or fix the target"));
  }
  path.push_back(address);
  for (const std::string& t : alias->targets) {
    std::string next =
        absl::StrContains(t, '@') ? t : absl::StrCat(t, "@", domain);
    if (absl::Status s = Visit(w, next, path); !s.ok()) return s;
  }
  path.pop_back();
  return absl::OkStatus();
}

}  // namespace

bool PlainMailbox(absl::string_view a) {
  size_t at = a.rfind('@');
  if (at == absl::string_view::npos || at == 0 || at + 1 == a.size() ||
      a.size() > 254 || at > 64) {
    return false;
  }
  for (unsigned char c : a) {
    if (c <= 32 || c == 127 || c == '<' || c == '>' || c == ',' || c == '"' ||
        c == '\\') {
      return false;
    }
  }
  absl::string_view domain = a.substr(at + 1);
  return !absl::StrContains(a.substr(0, at), '@') &&
         domain.find("..") == absl::string_view::npos &&
         domain.front() != '.' && domain.back() != '.';
}

absl::StatusOr<AliasFile> ParseAliases(absl::string_view text,
                                       absl::string_view domain,
                                       absl::string_view source) {
  AliasFile file;
  file.domain = Lower(domain);
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    auto fail = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ":", number, ": ", what));
    };
    if (size_t hash = line.find('#'); hash != absl::string_view::npos) {
      line = line.substr(0, hash);
    }
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    size_t colon = line.find(':');
    if (colon == absl::string_view::npos) {
      return fail("expected \"user: address, address\"");
    }
    std::string user = Lower(absl::StripAsciiWhitespace(line.substr(0, colon)));
    if (user != "*" && !PlainUser(user)) {
      return fail(absl::StrCat(
          "'", user,
          "' is no local part (write the user without @domain, or * for "
          "everyone else)"));
    }
    Alias alias;
    alias.user = user;
    alias.line = number;
    for (absl::string_view t :
         absl::StrSplit(line.substr(colon + 1), ',', absl::SkipWhitespace())) {
      t = absl::StripAsciiWhitespace(t);
      if (absl::StartsWith(t, "|") || absl::StartsWith(t, "/")) {
        return fail(absl::StrCat(
            "'", t,
            "': Peregrine forwards only; pipe and file targets are not "
            "supported (forward to a mailbox elsewhere)"));
      }
      bool ok = absl::StrContains(t, '@') ? PlainMailbox(t) : PlainUser(t);
      if (!ok) {
        return fail(absl::StrCat("'", t,
                                 "' is not an address (user@domain, or a "
                                 "user of this domain)"));
      }
      alias.targets.emplace_back(t);
    }
    if (alias.targets.empty()) {
      return fail(absl::StrCat("'", user, "' forwards nowhere: name a target"));
    }
    if (auto it = file.aliases.find(user); it != file.aliases.end()) {
      return fail(absl::StrCat("'", user, "' is already on line ",
                               it->second.line, "; keep one"));
    }
    file.aliases.emplace(user, std::move(alias));
  }
  return file;
}

std::string FormatAliases(const AliasFile& file) {
  std::string out = absl::StrCat(
      "# Aliases of ", file.domain,
      " (peregrine alias add|del edits this file; the daemon reads it\n"
      "# again within a second). user: address, address; * takes the rest.\n");
  const Alias* all = nullptr;
  for (const auto& [user, alias] : file.aliases) {
    if (user == "*") {
      all = &alias;
      continue;
    }
    absl::StrAppend(&out, user, ": ", absl::StrJoin(alias.targets, ", "), "\n");
  }
  if (all != nullptr) {
    absl::StrAppend(&out, "*: ", absl::StrJoin(all->targets, ", "), "\n");
  }
  return out;
}

absl::StatusOr<Resolution> Resolve(const AliasTable& table,
                                   absl::string_view address) {
  if (!PlainMailbox(address)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", address, "' is not an address"));
  }
  std::string domain = Lower(address.substr(address.rfind('@') + 1));
  if (table.find(domain) == table.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(domain, " is not a local domain (local.domains)"));
  }
  Walk w{table, {}, {}};
  std::vector<std::string> path;
  if (absl::Status s = Visit(w, std::string(address), path); !s.ok()) return s;
  return std::move(w.out);
}

}  // namespace peregrine::local
