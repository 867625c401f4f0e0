#include "mta/delivery/suspensions.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "base/files.h"

namespace peregrine::delivery {
namespace {

using json = nlohmann::json;

std::string Time(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

bool ParseTime(const json& j, absl::Time* t) {
  if (!j.is_string()) return false;
  std::string err;
  return absl::ParseTime("%Y-%m-%dT%H:%M:%SZ", j.get<std::string>(),
                         absl::UTCTimeZone(), t, &err);
}

int Targets(const Suspension& s) {
  return !s.domain.empty() + !s.mx_suffix.empty() + !s.campaign.empty() +
         !s.tenant.empty() + (s.id != 0);
}

bool SameTarget(const Suspension& a, const Suspension& b) {
  return a.domain == b.domain && a.mx_suffix == b.mx_suffix &&
         a.campaign == b.campaign && a.tenant == b.tenant && a.id == b.id;
}

}  // namespace

std::string Suspensions::Target(const Suspension& s) {
  if (!s.domain.empty()) return s.domain;
  if (!s.mx_suffix.empty()) return s.mx_suffix;
  if (!s.campaign.empty()) return absl::StrCat("campaign ", s.campaign);
  if (s.id != 0) return absl::StrCat("message ", queue::FormatMessageId(s.id));
  return absl::StrCat("tenant ", s.tenant);
}

bool PlausibleDomain(absl::string_view text, bool suffix) {
  if (text.empty() || text.size() > 253) return false;
  absl::string_view rest = text;
  if (suffix) {
    absl::ConsumePrefix(&rest, ".");
  } else {
    absl::ConsumePrefix(&rest, "*.");
  }
  if (rest.empty() || rest.front() == '.' || rest.back() == '.' ||
      absl::StrContains(rest, "..")) {
    return false;
  }
  for (char c : rest) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' &&
        c != '.' && c != '_') {
      return false;
    }
  }
  return true;
}

json Suspensions::ToJson(const Suspension& s) {
  json j = {{"reason", s.reason}, {"since", Time(s.since)}};
  if (!s.domain.empty()) j["domain"] = s.domain;
  if (!s.mx_suffix.empty()) j["mx_suffix"] = s.mx_suffix;
  if (!s.campaign.empty()) j["campaign"] = s.campaign;
  if (!s.tenant.empty()) j["tenant"] = s.tenant;
  if (s.id != 0) j["id"] = queue::FormatMessageId(s.id);
  j["until"] =
      s.until == absl::InfiniteFuture() ? json(nullptr) : json(Time(s.until));
  return j;
}

absl::Status Suspensions::Load() {
  std::ifstream in(path_);
  if (!in) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": cannot read: ", strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  json j = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  auto garbled = [this](absl::string_view why) {
    return absl::DataLossError(absl::StrCat(
        path_, ": ", why,
        "; it holds the sites suspended through the admin API: fix it, or "
        "remove it to resume them all"));
  };
  if (j.is_discarded() || !j.is_array()) return garbled("not a JSON list");
  std::vector<Suspension> list;
  for (const json& e : j) {
    if (!e.is_object()) return garbled("an entry is not an object");
    Suspension s;
    if (e.contains("domain") && e["domain"].is_string()) {
      s.domain = e["domain"].get<std::string>();
    }
    if (e.contains("mx_suffix") && e["mx_suffix"].is_string()) {
      s.mx_suffix = e["mx_suffix"].get<std::string>();
    }
    for (auto [key, field] :
         {std::pair{"campaign", &s.campaign}, std::pair{"tenant", &s.tenant}}) {
      if (e.contains(key) && e[key].is_string()) {
        *field = e[key].get<std::string>();
      }
    }
    if (e.contains("id") &&
        (!e["id"].is_string() ||
         !queue::ParseMessageId(e["id"].get<std::string>(), &s.id))) {
      return garbled("an entry has an invalid \"id\"");
    }
    if (Targets(s) != 1) {
      return garbled(
          "an entry needs one of domain, mx_suffix, campaign, tenant or id");
    }
    if (e.contains("reason") && e["reason"].is_string()) {
      s.reason = e["reason"].get<std::string>();
    }
    if (!e.contains("since") || !ParseTime(e["since"], &s.since)) {
      return garbled("an entry has no valid \"since\"");
    }
    if (e.contains("until") && !e["until"].is_null() &&
        !ParseTime(e["until"], &s.until)) {
      return garbled("an entry has an invalid \"until\"");
    }
    list.push_back(std::move(s));
  }
  absl::MutexLock lock(&mu_);
  list_ = std::move(list);
  return absl::OkStatus();
}

absl::Status Suspensions::SaveLocked() {
  json j = json::array();
  for (const Suspension& s : list_) j.push_back(ToJson(s));
  return WriteFileAtomically(path_, j.dump(2) + "\n");
}

absl::Status Suspensions::Add(Suspension s) {
  s.domain = absl::AsciiStrToLower(s.domain);
  s.mx_suffix = absl::AsciiStrToLower(s.mx_suffix);
  if (Targets(s) != 1) {
    return absl::InvalidArgumentError(
        "give one of \"domain\" (a recipient domain, or \"*.example.com\"), "
        "\"mx_suffix\" (\".outlook.com\": every domain whose MX hosts end "
        "so), \"campaign\", \"tenant\" or \"id\" (one message)");
  }
  for (auto [name, tag] :
       {std::pair{"campaign", &s.campaign}, std::pair{"tenant", &s.tenant}}) {
    if (tag->size() > 200) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": longer than 200 bytes"));
    }
    for (char c : *tag) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": control characters are not allowed"));
      }
    }
  }
  if (!s.domain.empty() && !PlausibleDomain(s.domain, false)) {
    return absl::InvalidArgumentError(
        absl::StrCat("domain: not a domain: ", s.domain));
  }
  if (!s.mx_suffix.empty() && !PlausibleDomain(s.mx_suffix, true)) {
    return absl::InvalidArgumentError(
        absl::StrCat("mx_suffix: not a host name suffix: ", s.mx_suffix));
  }
  for (char& c : s.reason) {
    if (c == '\r' || c == '\n') c = ' ';
  }
  if (s.reason.size() > 500) s.reason.resize(500);
  absl::MutexLock lock(&mu_);
  std::vector<Suspension> before = list_;
  bool replaced = false;
  for (Suspension& e : list_) {
    if (SameTarget(e, s)) {
      e = s;
      replaced = true;
    }
  }
  if (!replaced) {
    if (list_.size() >= 1000) {
      return absl::ResourceExhaustedError(
          "1000 suspensions already: resume some, or suspend by mx_suffix");
    }
    list_.push_back(std::move(s));
  }
  absl::Status saved = SaveLocked();
  if (!saved.ok()) list_ = std::move(before);
  return saved;
}

absl::StatusOr<bool> Suspensions::Remove(const Suspension& target) {
  Suspension t = target;
  t.domain = absl::AsciiStrToLower(t.domain);
  t.mx_suffix = absl::AsciiStrToLower(t.mx_suffix);
  absl::MutexLock lock(&mu_);
  std::vector<Suspension> before = list_;
  size_t n = list_.size();
  std::erase_if(list_, [&](const Suspension& s) { return SameTarget(s, t); });
  if (list_.size() == n) return false;
  absl::Status saved = SaveLocked();
  if (!saved.ok()) {
    list_ = std::move(before);
    return saved;
  }
  return true;
}

bool Suspensions::Expire(absl::Time now) {
  absl::MutexLock lock(&mu_);
  size_t n = list_.size();
  std::erase_if(list_, [now](const Suspension& s) { return s.until <= now; });
  if (list_.size() == n) return false;
  (void)SaveLocked();  // Kept in memory either way; a restart re-expires.
  return true;
}

std::vector<SiteRule> Suspensions::Rules() const {
  absl::MutexLock lock(&mu_);
  std::vector<SiteRule> rules;
  for (const Suspension& s : list_) {
    if (s.domain.empty() && s.mx_suffix.empty()) continue;
    SiteRule r;
    if (!s.domain.empty()) r.domains = {s.domain};
    if (!s.mx_suffix.empty()) r.mx_suffixes = {s.mx_suffix};
    r.suspended = true;
    rules.push_back(std::move(r));
  }
  return rules;
}

std::vector<std::string> Suspensions::Campaigns() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const Suspension& s : list_) {
    if (!s.campaign.empty()) out.push_back(s.campaign);
  }
  return out;
}

std::vector<std::string> Suspensions::Tenants() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const Suspension& s : list_) {
    if (!s.tenant.empty()) out.push_back(s.tenant);
  }
  return out;
}

std::vector<queue::MessageId> Suspensions::Messages() const {
  absl::MutexLock lock(&mu_);
  std::vector<queue::MessageId> out;
  for (const Suspension& s : list_) {
    if (s.id != 0) out.push_back(s.id);
  }
  return out;
}

std::vector<Suspension> Suspensions::List() const {
  absl::MutexLock lock(&mu_);
  return list_;
}

}  // namespace peregrine::delivery
