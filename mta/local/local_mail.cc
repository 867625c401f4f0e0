#include "mta/local/local_mail.h"

#include <sys/stat.h>

#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/files.h"
#include "base/log.h"

namespace peregrine::local {
namespace {

constexpr char kLog[] = "local";

std::string DomainOf(absl::string_view address) {
  size_t at = address.rfind('@');
  return at == absl::string_view::npos
             ? ""
             : absl::AsciiStrToLower(address.substr(at + 1));
}

// "size mtime" of each domain's file, to tell when one changed.
std::string Stamp(const std::vector<std::string>& domains,
                  const std::string& dir) {
  std::string out;
  for (const std::string& d : domains) {
    struct stat st;
    if (::stat((dir + "/" + d).c_str(), &st) != 0) {
      absl::StrAppend(&out, d, " - ;");
      continue;
    }
    absl::StrAppend(&out, d, " ", st.st_size, " ", st.st_mtim.tv_sec, ".",
                    st.st_mtim.tv_nsec, " ", st.st_ino, ";");
  }
  return out;
}

// ORCPT's "rfc822;ADDRESS", the address as xtext (RFC 3461 4).
std::string Orcpt(absl::string_view address) {
  std::string out = "rfc822;";
  for (unsigned char c : address) {
    if (c < 33 || c > 126 || c == '+' || c == '=') {
      absl::StrAppend(&out, absl::StrFormat("+%02X", c));
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<AliasTable> LoadAliases(const std::vector<std::string>& domains,
                                       const std::string& dir) {
  AliasTable table;
  for (const std::string& d : domains) {
    std::string path = dir + "/" + d;
    absl::Status readable = CheckReadable(path, "aliases file");
    if (absl::IsNotFound(readable)) {
      table[d].domain = d;  // No aliases yet: every user is unknown.
      continue;
    }
    if (!readable.ok()) return readable;
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    if (text.str().size() > (16 << 20)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": larger than 16 MiB; is it an aliases file?"));
    }
    auto file = ParseAliases(text.str(), d, path);
    if (!file.ok()) return file.status();
    table[d] = std::move(*file);
  }
  return table;
}

LocalMail::LocalMail(LocalOptions options) : options_(std::move(options)) {}

absl::Status LocalMail::Load() {
  std::string stamp = Stamp(options_.domains, options_.aliases_dir);
  auto table = LoadAliases(options_.domains, options_.aliases_dir);
  if (!table.ok()) return table.status();
  absl::MutexLock lock(&mu_);
  table_ = std::move(*table);
  stamp_ = std::move(stamp);
  checked_ = absl::Now();
  return absl::OkStatus();
}

void LocalMail::MaybeReload() {
  absl::Time now = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    if (now - checked_ < absl::Seconds(1)) return;
    checked_ = now;
  }
  std::string stamp = Stamp(options_.domains, options_.aliases_dir);
  {
    absl::MutexLock lock(&mu_);
    if (stamp == stamp_) return;
  }
  auto table = LoadAliases(options_.domains, options_.aliases_dir);
  absl::MutexLock lock(&mu_);
  if (!table.ok()) {
    std::string error(table.status().message());
    if (error != last_error_) {
      log::Error(kLog, "aliases not reloaded, the last good ones stay: %s",
                 error);
      last_error_ = error;
    }
    return;
  }
  table_ = std::move(*table);
  stamp_ = std::move(stamp);
  last_error_.clear();
  log::Info(kLog, "aliases reloaded from %s", options_.aliases_dir);
}

AliasTable LocalMail::Table() {
  MaybeReload();
  absl::MutexLock lock(&mu_);
  return table_;
}

bool LocalMail::IsLocal(absl::string_view domain) const {
  for (const std::string& d : options_.domains) {
    if (absl::EqualsIgnoreCase(d, domain)) return true;
  }
  return false;
}

bool LocalMail::Accepts(absl::string_view domain) const {
  return IsLocal(domain) ||
         (options_.srs && !options_.srs_options.domain.empty() &&
          absl::EqualsIgnoreCase(domain, options_.srs_options.domain));
}

std::string LocalMail::CheckRecipient(absl::string_view address) {
  std::string domain = DomainOf(address);
  if (domain.empty() || !Accepts(domain)) return "";
  if (options_.srs && IsSrsAddress(options_.srs_options, address)) {
    auto back = SrsReverse(options_.srs_options, address, absl::Now());
    if (back.ok()) return "";
    return absl::StrCat("550 5.1.1 <", address, ">: ", back.status().message());
  }
  if (!IsLocal(domain)) {
    return absl::StrCat("550 5.1.1 <", address,
                        ">: Recipient address rejected: no such SRS address");
  }
  MaybeReload();
  absl::StatusOr<Resolution> r;
  {
    absl::MutexLock lock(&mu_);
    r = Resolve(table_, address);
  }
  if (r.ok()) return "";
  if (absl::IsFailedPrecondition(r.status())) {
    log::Error(kLog, "mail for %s deferred: %s", address, r.status().message());
    return "451 4.3.0 Error: the aliases of this address are being fixed; "
           "try again later";
  }
  return absl::StrCat("550 5.1.1 <", address,
                      ">: Recipient address rejected: User unknown");
}

Rewritten LocalMail::Rewrite(absl::string_view sender,
                             std::vector<Rcpt> recipients, absl::Time now) {
  Rewritten out;
  out.sender = std::string(sender);
  bool any_local = false;
  for (const Rcpt& r : recipients) {
    if (Accepts(DomainOf(r.address))) any_local = true;
  }
  if (!any_local) {
    out.recipients = std::move(recipients);
    return out;
  }
  MaybeReload();
  std::set<std::string> seen;
  auto add = [&](Rcpt r) {
    if (seen.insert(absl::AsciiStrToLower(r.address)).second) {
      out.recipients.push_back(std::move(r));
    }
  };
  for (Rcpt& r : recipients) {
    std::string domain = DomainOf(r.address);
    if (!Accepts(domain)) {
      add(std::move(r));
      continue;
    }
    if (options_.srs && IsSrsAddress(options_.srs_options, r.address)) {
      auto back = SrsReverse(options_.srs_options, r.address, now);
      if (!back.ok()) {
        log::Warn(kLog, "dropped %s: %s", r.address, back.status().message());
        continue;
      }
      if (r.orcpt.empty()) r.orcpt = Orcpt(r.address);
      r.address = *back;
      add(std::move(r));
      continue;
    }
    absl::StatusOr<Resolution> res;
    {
      absl::MutexLock lock(&mu_);
      res = Resolve(table_, r.address);
    }
    if (!res.ok()) {
      log::Warn(kLog, "dropped %s (accepted at RCPT, no alias now): %s",
                r.address, res.status().message());
      continue;
    }
    if (out.forwarded_for.empty()) out.forwarded_for = domain;
    for (const std::string& target : res->targets) {
      Rcpt t;
      t.address = target;
      t.notify = r.notify;
      t.orcpt = r.orcpt.empty() ? Orcpt(r.address) : r.orcpt;
      add(std::move(t));
    }
  }
  // The return path: ours, so SPF passes where the mail is forwarded to,
  // and a bounce comes back to be sent on. Not for <> (a bounce stays
  // one) nor for a sender of a local domain (its SPF already names us).
  if (options_.srs && !out.forwarded_for.empty() && !sender.empty() &&
      !IsLocal(DomainOf(sender))) {
    out.sender = SrsForward(options_.srs_options, sender, now);
  }
  return out;
}

}  // namespace peregrine::local
