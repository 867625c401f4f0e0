// The [local] section: the domains Peregrine takes mail for itself and
// forwards by aliases (mta/local/).

#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "mta/config_schema.h"

namespace peregrine::config_schema {
namespace {

bool PlainDomain(absl::string_view d) {
  if (d.empty() || d.size() > 253 || d.front() == '.' || d.back() == '.' ||
      absl::StrContains(d, "..")) {
    return false;
  }
  for (char c : d) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '.') return false;
  }
  return true;
}

}  // namespace

std::vector<Setting> LocalSettings() {
  return {
      {"local", "domains", "[]",
       "Domains this server is the MX of. Mail for them is taken from any\n"
       "client (nothing else is relayed for it) and forwarded as the\n"
       "aliases say; an address no alias takes is refused at RCPT (550\n"
       "5.1.1). Peregrine keeps no mailboxes: it forwards only.",
       [](const toml::node& n, Config& c) {
         auto l = GetStringList(n, "domains");
         if (!l.ok()) return l.status();
         c.local_domains.clear();
         for (const std::string& d : *l) {
           if (!PlainDomain(d)) {
             return Expected("domain names such as \"example.com\"", n);
           }
           c.local_domains.push_back(absl::AsciiStrToLower(d));
         }
         return absl::OkStatus();
       }},
      {"local", "aliases_dir", "\"\"",
       "A file per local domain, named as the domain: lines\n"
       "\"user: address, address\", \"*: address\" for every other user.\n"
       "`peregrine alias add|del|list|resolve` edit and explain them; the\n"
       "daemon reads a changed file within a second. Empty: aliases/ in the\n"
       "data directory.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a directory");
         if (s.ok()) c.local_aliases_dir = *s;
         return s.status();
       }},
      {"local", "srs", "true",
       "Rewrite the return path of forwarded mail with SRS (the postsrsd\n"
       "scheme), so it passes SPF at the destination and its bounces come\n"
       "back here to be sent on to the original sender. Off: forwarded\n"
       "mail keeps its sender and fails SPF where the sender publishes one.",
       [](const toml::node& n, Config& c) { return GetBool(n, &c.local_srs); }},
      {"local", "srs_domain", "\"\"",
       "The domain of SRS return paths; its mail is taken from anyone and\n"
       "its valid SRS addresses sent back to the original sender. Empty: the\n"
       "first of local.domains.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a domain");
         if (!s.ok()) return s.status();
         if (!s->empty() && !PlainDomain(*s)) {
           return Expected("a domain such as \"example.com\"", n);
         }
         c.local_srs_domain = absl::AsciiStrToLower(*s);
         return absl::OkStatus();
       }},
      {"local", "srs_secret_file", "\"\"",
       "The SRS key; made (random, mode 0600) when missing. Empty:\n"
       "srs.secret in the data directory. Keep it: bounces of mail\n"
       "forwarded under an old key are refused.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a file path");
         if (s.ok()) c.local_srs_secret_file = *s;
         return s.status();
       }},
  };
}

}  // namespace peregrine::config_schema
