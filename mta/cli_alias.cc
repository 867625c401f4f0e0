// `peregrine alias add|del|list|resolve`: the aliases files of the local
// domains (mta/local/aliases.h), edited whole and replaced atomically; a
// running daemon reads a changed file within a second.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <ostream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "mta/cli_commands.h"
#include "mta/local/local_mail.h"

namespace peregrine {
namespace {

// Writes `text` to `path` through a temporary file and rename(2), so the
// daemon never reads half a file.
absl::Status Replace(const std::string& path, const std::string& text) {
  std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot write ", tmp, ": ", strerror(errno)));
  }
  bool ok = ::write(fd, text.data(), text.size()) ==
                static_cast<ssize_t>(text.size()) &&
            ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string why = strerror(errno);
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot write ", path, ": ", why));
  }
  return absl::OkStatus();
}

}  // namespace

void AddAliasCommands(CLI::App& app, AliasArgs& a) {
  CLI::App* alias = app.add_subcommand(
      "alias",
      "Where mail for the local domains goes (local.domains; forward only)");
  alias->require_subcommand(1);
  for (const char* what : {"add", "del", "list", "resolve"}) {
    std::string w = what;
    CLI::App* sub = alias->add_subcommand(
        what, w == "add"
                  ? "Forward USER@DOMAIN (or *@DOMAIN: everyone else) to "
                    "TARGETs (the file is rewritten without its comments)"
              : w == "del" ? "Stop forwarding USER@DOMAIN (or only to TARGETs)"
              : w == "list"
                  ? "Print the aliases"
                  : "Say where mail for ADDRESS goes, step by step (exit 1: "
                    "nowhere)");
    sub->add_option("-c,--config", a.config_path, "TOML configuration file");
    sub->add_option("--data-dir", a.data_dir, "Data directory");
    if (w == "list") {
      sub->add_option("domain", a.address, "Only this domain");
    } else {
      sub->add_option("address", a.address,
                      w == "resolve" ? "An address" : "USER@DOMAIN or *@DOMAIN")
          ->required();
    }
    if (w == "add") {
      sub->add_option("targets", a.targets,
                      "Addresses, or users of the same domain")
          ->required();
    }
    if (w == "del") sub->add_option("targets", a.targets, "Only these");
  }
}

int AliasCommand(const std::string& what, const AliasArgs& a, std::ostream& out,
                 std::ostream& err) {
  std::string me = absl::StrCat("peregrine alias ", what, ": ");
  absl::StatusOr<Config> config =
      a.config_path.empty() ? DefaultConfig() : LoadConfigFile(a.config_path);
  if (!config.ok()) {
    err << me << config.status().message() << "\n";
    return 2;
  }
  if (!a.data_dir.empty()) config->data_dir = a.data_dir;
  if (config->local_domains.empty()) {
    err << me << "no local domains: set local.domains in " << config->source
        << " (e.g. domains = [\"example.com\"])\n";
    return 1;
  }
  const std::string dir = config->AliasesDir();
  auto table = local::LoadAliases(config->local_domains, dir);
  if (!table.ok()) {
    err << me << table.status().message() << "\n";
    return 1;
  }
  if (what == "list") {
    for (const auto& [domain, file] : *table) {
      if (!a.address.empty() && !absl::EqualsIgnoreCase(a.address, domain)) {
        continue;
      }
      if (file.aliases.empty()) {
        out << "# " << domain << ": no aliases (all its mail is refused)\n";
      }
      for (const auto& [user, alias] : file.aliases) {
        out << user << "@" << domain << ": "
            << absl::StrJoin(alias.targets, ", ") << "\n";
      }
    }
    return 0;
  }
  if (what == "resolve") {
    auto r = local::Resolve(*table, a.address);
    if (!r.ok()) {
      err << me << r.status().message() << "\n";
      return 1;
    }
    for (const std::string& path : r->paths) out << path << "\n";
    return 0;
  }
  // add, del: USER@DOMAIN of a local domain.
  size_t at = a.address.rfind('@');
  std::string user =
      absl::AsciiStrToLower(absl::string_view(a.address).substr(0, at));
  std::string domain = at == std::string::npos
                           ? ""
                           : absl::AsciiStrToLower(a.address.substr(at + 1));
  if (at == std::string::npos || at == 0 ||
      (user != "*" && !local::PlainMailbox(a.address))) {
    err << me << "'" << a.address
        << "' is not USER@DOMAIN (or *@DOMAIN for everyone else)\n";
    return 2;
  }
  auto file = table->find(domain);
  if (file == table->end()) {
    err << me << domain << " is not a local domain; local.domains in "
        << config->source << " lists "
        << absl::StrJoin(config->local_domains, ", ") << "\n";
    return 1;
  }
  auto& aliases = file->second.aliases;
  if (what == "add") {
    local::Alias& alias = aliases[user];
    alias.user = user;
    for (const std::string& t : a.targets) {
      bool ok = absl::StrContains(t, '@')
                    ? local::PlainMailbox(t)
                    : local::PlainMailbox(absl::StrCat(t, "@", domain));
      if (!ok || absl::StartsWith(t, "|") || absl::StartsWith(t, "/")) {
        err << me << "'" << t
            << "' is not an address (user@domain, or a user of " << domain
            << "; Peregrine forwards only)\n";
        return 2;
      }
      if (std::find(alias.targets.begin(), alias.targets.end(), t) ==
          alias.targets.end()) {
        alias.targets.push_back(t);
      }
    }
  } else {  // del
    auto it = aliases.find(user);
    if (it == aliases.end()) {
      err << me << "no alias " << user << "@" << domain << "\n";
      return 1;
    }
    if (a.targets.empty()) {
      aliases.erase(it);
    } else {
      auto& t = it->second.targets;
      for (const std::string& x : a.targets) {
        auto found = std::find(t.begin(), t.end(), x);
        if (found == t.end()) {
          err << me << user << "@" << domain << " does not forward to " << x
              << "\n";
          return 1;
        }
        t.erase(found);
      }
      if (t.empty()) aliases.erase(it);
    }
  }
  // No loop or dead end made: every alias of the domain still resolves.
  for (const auto& [u, alias] : aliases) {
    if (u == "*") continue;  // "*" only takes what nothing else does.
    auto r = local::Resolve(*table, absl::StrCat(u, "@", domain));
    if (!r.ok() && !absl::IsNotFound(r.status())) {
      err << me << "not written: " << r.status().message() << "\n";
      return 1;
    }
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  std::string path = dir + "/" + domain;
  if (absl::Status s = Replace(path, local::FormatAliases(file->second));
      !s.ok()) {
    err << me << s.message() << "\n";
    return 1;
  }
  if (what == "add") {
    auto r = local::Resolve(
        *table, user == "*" ? absl::StrCat("anyone@", domain) : a.address);
    if (r.ok()) {
      for (const std::string& p : r->paths) out << p << "\n";
    }
  } else {
    out << "removed from " << path << "\n";
  }
  return 0;
}

}  // namespace peregrine
