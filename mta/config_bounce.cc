// The [bounce] and [suppression] sections: how failures are classified,
// who is told (DSNs), and which addresses are no longer mailed.

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "mta/bounce/category.h"
#include "mta/config_schema.h"

namespace peregrine::config_schema {
namespace {

absl::Status ListenerNames(const std::vector<std::string>& names,
                           absl::string_view what) {
  for (const std::string& n : names) {
    if (n != "relay" && n != "submission" && n != "submissions") {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": unknown listener \"", n,
                       "\" (relay, submission or submissions)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<Setting> BounceSettings() {
  return {
      {"bounce", "rules_file", "\"\"",
       "Your own failure classification rules, tried before the built-in\n"
       "ones (`peregrine bounce rules` prints those: copy a [[rule]] to\n"
       "change it). Each [[rule]] has a category and RE2 patterns matched\n"
       "against \"CODE ENHANCED TEXT\" of a reply. `peregrine bounce\n"
       "classify \"550 5.1.1 ...\"` shows which rule a reply meets. SIGHUP\n"
       "reloads it.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a file path");
         if (s.ok()) c.bounce_rules_file = *s;
         return s.status();
       }},
      {"bounce", "dsn", "true",
       "Tell the envelope sender when mail to a recipient fails or\n"
       "expires, with a delivery status notification (RFC 3464) from the\n"
       "null sender. Never sent to the null sender, nor for NOTIFY=NEVER.",
       [](const toml::node& n, Config& c) {
         return GetBool(n, &c.bounce_dsn);
       }},
      {"bounce", "no_dsn_listeners", "[]",
       "Listeners whose mail gets no DSNs (\"relay\": a bulk sender\n"
       "reading the event log instead).",
       [](const toml::node& n, Config& c) {
         auto l = GetStringList(n, "listener names");
         if (!l.ok()) return l.status();
         if (absl::Status s = ListenerNames(*l, "listener"); !s.ok()) return s;
         c.bounce_no_dsn_listeners = *l;
         return absl::OkStatus();
       }},
      {"bounce", "no_dsn_sender_domains", "[]",
       "Sender domains whose mail gets no DSNs.",
       [](const toml::node& n, Config& c) {
         auto l = GetStringList(n, "domains");
         if (l.ok()) c.bounce_no_dsn_sender_domains = *l;
         return l.status();
       }},
      {"bounce", "delay_dsn_after", "\"4h\"",
       "Send one \"delayed\" DSN once a recipient has waited this long\n"
       "(\"0s\": never), for mail from delay_dsn_listeners that did not\n"
       "say NOTIFY (NOTIFY=DELAY asks for it from any listener).",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::ZeroDuration(), absl::Hours(24 * 30),
                            &c.bounce_delay_dsn_after);
       }},
      {"bounce", "delay_dsn_listeners", "[\"submission\", \"submissions\"]",
       "Listeners whose mail gets delay DSNs without asking.",
       [](const toml::node& n, Config& c) {
         auto l = GetStringList(n, "listener names");
         if (!l.ok()) return l.status();
         if (absl::Status s = ListenerNames(*l, "listener"); !s.ok()) return s;
         c.bounce_delay_dsn_listeners = *l;
         return absl::OkStatus();
       }},
      {"bounce", "dsn_full_limit", "\"50KB\"",
       "A failure DSN returns the whole message up to this size (unless\n"
       "RET=HDRS); larger ones, and delay DSNs, return its headers.",
       [](const toml::node& n, Config& c) {
         return GetSize(n, 0, 64ull << 20, &c.bounce_dsn_full_limit);
       }},
      {"bounce", "verp_domain", "\"\"",
       "Send with a return path per message and recipient,\n"
       "PREFIX+TOKEN@verp_domain, so bounces that come back name whose mail\n"
       "failed; the token is signed (HMAC-SHA256) so a forged bounce\n"
       "suppresses no one. Point this domain's MX at Peregrine: mail to it\n"
       "is read as bounces and complaints, never relayed. Empty: off.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a domain");
         if (!s.ok()) return s.status();
         if (!s->empty() && (s->find('.') == std::string::npos ||
                             s->find_first_of("@ /") != std::string::npos)) {
           return Expected("a domain such as \"bounces.example.com\"", n);
         }
         c.bounce_verp_domain = *s;
         return absl::OkStatus();
       }},
      {"bounce", "verp_prefix", "\"bounces\"",
       "The local part before '+' in VERP return paths.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a local part");
         if (!s.ok()) return s.status();
         if (s->empty() || s->size() > 32 ||
             s->find_first_of("@+ <>\"") != std::string::npos) {
           return Expected("a short local part without @ + or spaces", n);
         }
         c.bounce_verp_prefix = *s;
         return absl::OkStatus();
       }},
      {"bounce", "verp_secret_file", "\"\"",
       "The key that signs VERP tokens; made (random, mode 0600) when\n"
       "missing. Empty: verp.secret in the data directory. Nodes that share\n"
       "a bounce domain share this file.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a file path");
         if (s.ok()) c.bounce_verp_secret_file = *s;
         return s.status();
       }},
      {"bounce", "domains", "[]",
       "More domains whose mail is read as bounces and feedback reports\n"
       "(never relayed), besides verp_domain: the address a feedback loop\n"
       "sends complaints to, say.",
       [](const toml::node& n, Config& c) {
         auto l = GetStringList(n, "domains");
         if (l.ok()) c.bounce_domains = *l;
         return l.status();
       }},
      {"suppression", "enabled", "true",
       "Keep a suppression list: recipients whose failures say they are\n"
       "dead are added, and mail to them is refused at RCPT\n"
       "(`peregrine suppression list|add|remove|import|export`).",
       [](const toml::node& n, Config& c) {
         return GetBool(n, &c.suppression_enabled);
       }},
      {"suppression", "categories",
       "[\"invalid_recipient\", \"bad_domain\", \"inactive_mailbox\"]",
       "Failure categories that add the recipient to the list.",
       [](const toml::node& n, Config& c) {
         auto l = GetStringList(n, "category names");
         if (!l.ok()) return l.status();
         for (const std::string& name : *l) {
           if (!bounce::ParseCategory(name)) {
             return absl::InvalidArgumentError(
                 absl::StrCat("unknown category \"", name,
                              "\" (peregrine bounce rules lists them)"));
           }
         }
         c.suppression_categories = *l;
         return absl::OkStatus();
       }},
      {"suppression", "scope", "\"global\"",
       "Whom an added address is suppressed for: \"global\" (all mail),\n"
       "\"tenant\" or \"campaign\" (mail with the failed message's tag).",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "global, tenant or campaign");
         if (!s.ok()) return s.status();
         if (*s != "global" && *s != "tenant" && *s != "campaign") {
           return Expected("\"global\", \"tenant\" or \"campaign\"", n);
         }
         c.suppression_scope = *s == "global" ? "" : *s;
         return absl::OkStatus();
       }},
      {"suppression", "expiry", "\"0s\"",
       "How long an added address stays on the list (\"0s\": for good).",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::ZeroDuration(), absl::Hours(24 * 3650),
                            &c.suppression_expiry);
       }},
  };
}

}  // namespace peregrine::config_schema
