#include "mta/bounce/suppression.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "mta/bounce/category.h"

namespace peregrine::bounce {
namespace {

constexpr absl::string_view kPrefix = "sup\x01";
constexpr char kSep = '\x01';

std::string Key(absl::string_view scope, absl::string_view address) {
  return absl::StrCat(kPrefix, scope, std::string(1, kSep),
                      absl::AsciiStrToLower(address));
}

// Value: fields separated by \x01 (none of them holds control bytes).
std::string Clean(absl::string_view s) {
  std::string out(s.substr(0, 1000));
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  }
  return out;
}

std::string EncodeValue(const SuppressionEntry& e) {
  return absl::StrJoin(
      {std::string("1"), Clean(e.category), Clean(e.reason), Clean(e.source),
       absl::StrCat(absl::ToUnixSeconds(e.added)),
       e.expires == absl::InfiniteFuture()
           ? std::string()
           : absl::StrCat(absl::ToUnixSeconds(e.expires)),
       Clean(e.address)},
      std::string(1, kSep));
}

bool DecodeEntry(absl::string_view key, absl::string_view value,
                 SuppressionEntry* e) {
  if (!absl::ConsumePrefix(&key, kPrefix)) return false;
  size_t sep = key.find(kSep);
  if (sep == absl::string_view::npos) return false;
  e->scope = std::string(key.substr(0, sep));
  std::vector<absl::string_view> f = absl::StrSplit(value, kSep);
  if (f.size() < 7 || f[0] != "1") return false;
  e->category = std::string(f[1]);
  e->reason = std::string(f[2]);
  e->source = std::string(f[3]);
  int64_t added = 0, expires = 0;
  if (!absl::SimpleAtoi(f[4], &added)) return false;
  e->added = absl::FromUnixSeconds(added);
  e->expires = f[5].empty() || !absl::SimpleAtoi(f[5], &expires)
                   ? absl::InfiniteFuture()
                   : absl::FromUnixSeconds(expires);
  e->address =
      f[6].empty() ? std::string(key.substr(sep + 1)) : std::string(f[6]);
  return true;
}

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

std::string CsvField(absl::string_view s) {
  if (s.find_first_of(",\"\r\n") == absl::string_view::npos) {
    return std::string(s);
  }
  return absl::StrCat("\"", absl::StrReplaceAll(s, {{"\"", "\"\""}}), "\"");
}

// RFC 4180 fields of one line. Why by hand: a line is all we read, and
// twenty lines here beat a dependency (see README.md).
absl::StatusOr<std::vector<std::string>> SplitCsv(absl::string_view line) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        fields.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        fields.back() += c;
      }
    } else if (c == '"' && fields.back().empty()) {
      quoted = true;
    } else if (c == ',') {
      fields.emplace_back();
    } else {
      fields.back() += c;
    }
  }
  if (quoted) return absl::InvalidArgumentError("a quote is not closed");
  return fields;
}

bool ParseTime(absl::string_view text, absl::Time* t) {
  std::string err;
  return absl::ParseTime("%Y-%m-%dT%H:%M:%SZ", text, t, &err) ||
         absl::ParseTime("%Y-%m-%d", text, t, &err);
}

bool PlausibleAddress(absl::string_view a) {
  size_t at = a.rfind('@');
  if (at == 0 || at == absl::string_view::npos || at + 1 >= a.size() ||
      a.size() > 320) {
    return false;
  }
  for (char c : a) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == '<' || c == '>' ||
        c == ',')
      return false;
  }
  return true;
}

}  // namespace

absl::Status CheckScope(absl::string_view scope) {
  if (scope.empty()) return absl::OkStatus();
  absl::string_view name = scope;
  if (!absl::ConsumePrefix(&name, "tenant:") &&
      !absl::ConsumePrefix(&name, "campaign:")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scope \"", scope,
        "\": use \"\" (global), \"tenant:NAME\" or \"campaign:NAME\""));
  }
  if (name.empty() || name.size() > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("scope \"", scope, "\": the name must be 1 to 64 long"));
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' &&
        c != '_' && c != '-') {
      return absl::InvalidArgumentError(
          absl::StrCat("scope \"", scope,
                       "\": the name may hold letters, digits and . _ -"));
    }
  }
  return absl::OkStatus();
}

absl::Status SuppressionList::Add(const SuppressionEntry& entry) {
  if (!PlausibleAddress(entry.address)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", entry.address, "\" is not an address (local@domain)"));
  }
  if (absl::Status s = CheckScope(entry.scope); !s.ok()) return s;
  absl::Status s =
      table_->Put(Key(entry.scope, entry.address), EncodeValue(entry));
  if (s.ok() && observer_) observer_(entry, false);
  return s;
}

absl::Status SuppressionList::ApplyShared(const SuppressionEntry& entry,
                                          bool removed) {
  if (!PlausibleAddress(entry.address)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", entry.address, "\" is not an address (local@domain)"));
  }
  if (absl::Status s = CheckScope(entry.scope); !s.ok()) return s;
  std::string key = Key(entry.scope, entry.address);
  if (removed) return table_->Delete(key);
  std::string value = EncodeValue(entry);
  auto had = table_->Get(key);
  if (!had.ok()) return had.status();
  if (had->has_value() && **had == value) return absl::OkStatus();
  return table_->Put(key, value);
}

absl::StatusOr<bool> SuppressionList::Remove(absl::string_view address,
                                             absl::string_view scope) {
  std::string key = Key(scope, address);
  auto had = table_->Get(key);
  if (!had.ok()) return had.status();
  if (!had->has_value()) return false;
  if (absl::Status s = table_->Delete(key); !s.ok()) return s;
  if (observer_) {
    SuppressionEntry gone;
    gone.address = std::string(address);
    gone.scope = std::string(scope);
    observer_(gone, true);
  }
  return true;
}

absl::StatusOr<std::optional<SuppressionEntry>> SuppressionList::Find(
    absl::string_view address, absl::string_view tenant,
    absl::string_view campaign, absl::Time now) {
  std::string scopes[3] = {
      "", tenant.empty() ? "" : absl::StrCat("tenant:", tenant),
      campaign.empty() ? "" : absl::StrCat("campaign:", campaign)};
  for (int i = 0; i < 3; ++i) {
    if (i > 0 && scopes[i].empty()) continue;
    std::string key = Key(scopes[i], address);
    auto value = table_->Get(key);
    if (!value.ok()) return value.status();
    if (!value->has_value()) continue;
    SuppressionEntry e;
    if (!DecodeEntry(key, **value, &e) || e.expires <= now) continue;
    hits_.fetch_add(1, std::memory_order_relaxed);
    return e;
  }
  return std::nullopt;
}

absl::Status SuppressionList::ForEach(
    const std::function<bool(const SuppressionEntry&)>& visit) {
  return table_->Scan(kPrefix, [&](absl::string_view k, absl::string_view v) {
    SuppressionEntry e;
    if (!DecodeEntry(k, v, &e)) return true;  // Skip what we cannot read.
    return visit(e);
  });
}

std::string CsvHeader() {
  return "address,scope,category,reason,source,added,expires";
}

std::string ToCsv(const SuppressionEntry& e) {
  return absl::StrJoin(
      {CsvField(e.address), CsvField(e.scope), CsvField(e.category),
       CsvField(e.reason), CsvField(e.source), Rfc3339(e.added),
       e.expires == absl::InfiniteFuture() ? std::string()
                                           : Rfc3339(e.expires)},
      ",");
}

absl::StatusOr<std::optional<SuppressionEntry>> ParseCsvLine(
    absl::string_view line, const SuppressionEntry& defaults) {
  absl::ConsumeSuffix(&line, "\r");
  if (absl::StripAsciiWhitespace(line).empty()) return std::nullopt;
  auto fields = SplitCsv(line);
  if (!fields.ok()) return fields.status();
  std::vector<std::string>& f = *fields;
  for (std::string& s : f) s = std::string(absl::StripAsciiWhitespace(s));
  if (f[0] == "address") return std::nullopt;  // The header.
  SuppressionEntry e = defaults;
  absl::string_view address = f[0];
  if (absl::ConsumePrefix(&address, "<")) absl::ConsumeSuffix(&address, ">");
  e.address = std::string(address);
  if (!PlausibleAddress(e.address)) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", f[0], "\" is not an address (local@domain)"));
  }
  if (f.size() > 7) {
    return absl::InvalidArgumentError(
        absl::StrCat("more than 7 fields (", CsvHeader(), ")"));
  }
  if (f.size() > 1) e.scope = f[1];
  if (absl::Status s = CheckScope(e.scope); !s.ok()) return s;
  if (f.size() > 2 && !f[2].empty()) {
    if (f[2] != "complaint" && f[2] != "manual" && !ParseCategory(f[2])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "category \"", f[2],
          "\": use a category name (peregrine bounce rules), complaint or "
          "manual"));
    }
    e.category = f[2];
  }
  if (f.size() > 3 && !f[3].empty()) e.reason = f[3];
  if (f.size() > 4 && !f[4].empty()) e.source = f[4];
  if (f.size() > 5 && !f[5].empty() && !ParseTime(f[5], &e.added)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "added \"", f[5], "\": use 2026-11-27T10:00:00Z or 2026-11-27"));
  }
  if (f.size() > 6 && !f[6].empty() && !ParseTime(f[6], &e.expires)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expires \"", f[6], "\": use 2026-11-27T10:00:00Z or 2026-11-27"));
  }
  return e;
}

std::string SuppressedReply(absl::string_view address,
                            const SuppressionEntry& e) {
  std::string why = e.category;
  if (e.added != absl::UnixEpoch()) {
    absl::StrAppend(&why, " on ",
                    absl::FormatTime("%Y-%m-%d", e.added, absl::UTCTimeZone()));
  }
  if (!e.reason.empty()) absl::StrAppend(&why, ": ", e.reason.substr(0, 200));
  std::string reply =
      absl::StrCat("550 5.1.1 <", address, ">: this address is suppressed (",
                   why, "); mail to it is not sent");
  for (char& c : reply) {
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  }
  return reply;
}

}  // namespace peregrine::bounce
