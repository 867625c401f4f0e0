// `peregrine dkim keygen|sign` (cli.cc parses the command line).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "dkim/key.h"
#include "dkim/signer.h"
#include "mta/cli_commands.h"

namespace peregrine {
namespace {

constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

}  // namespace

int DkimKeygen(const KeygenArgs& a, std::ostream& out, std::ostream& err) {
  dkim::KeyType type =
      a.type == "ed25519" ? dkim::KeyType::kEd25519 : dkim::KeyType::kRsa;
  // Check the names before spending time on a key.
  auto check = dkim::Signer::Create({a.domain, a.selector}, nullptr);
  if (!check.ok() && !absl::StrContains(check.status().message(), "no key")) {
    err << "peregrine dkim keygen: " << check.status().message() << "\n";
    return kExitUsage;
  }
  std::string path =
      a.out.empty() ? absl::StrCat("dkim/", a.domain, "/", a.selector, ".key")
                    : a.out;
  if (!a.force && std::filesystem::exists(path)) {
    err << "peregrine dkim keygen: " << path
        << " exists; keep it (its record may be published) or pass --force\n";
    return kExitUsage;
  }
  auto key = dkim::PrivateKey::Generate(type, a.bits);
  if (!key.ok()) {
    err << "peregrine dkim keygen: " << key.status().message() << "\n";
    return kExitUsage;
  }
  std::error_code ec;
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  std::string pem = (*key)->ToPem();
  ::unlink(path.c_str());  // --force: a fresh file, so the mode is ours.
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0 ||
      ::write(fd, pem.data(), pem.size()) != static_cast<ssize_t>(pem.size())) {
    err << "peregrine dkim keygen: cannot write " << path << ": "
        << std::strerror(errno) << "\n";
    if (fd >= 0) ::close(fd);
    return kExitRuntime;
  }
  ::fchmod(fd, 0600);
  ::close(fd);
  std::string name = absl::StrCat(a.selector, "._domainkey.", a.domain);
  std::string record = (*key)->DnsRecord();
  std::string absolute = std::filesystem::absolute(path).lexically_normal();
  out << "Private key (" << (*key)->algorithm() << ", "
      << ((*key)->type() == dkim::KeyType::kRsa
              ? absl::StrCat((*key)->bits(), " bits")
              : std::string("Ed25519"))
      << ") written to " << absolute << " (mode 0600).\n\n"
      << "Publish this TXT record in the DNS of " << a.domain << ":\n\n"
      << "  Name:  " << name << "\n"
      << "  Type:  TXT\n"
      << "  Value: " << dkim::QuoteTxt(record) << "\n\n"
      << "As a zone file line:\n\n"
      << name << ". IN TXT ( " << dkim::QuoteTxt(record) << " )\n\n"
      << "Then sign with it (peregrine.toml):\n\n"
      << "[[dkim.keys]]\n"
      << "domain = \"" << a.domain << "\"\n"
      << "selector = \"" << a.selector << "\"\n"
      << "key_file = \"" << absolute << "\"\n";
  return 0;
}

int DkimSign(const SignArgs& a, std::istream& in, std::ostream& out,
             std::ostream& err) {
  auto key = dkim::PrivateKey::LoadPemFile(a.key_file);
  if (!key.ok()) {
    err << "peregrine dkim sign: " << key.status().message() << "\n";
    return kExitUsage;
  }
  dkim::SignerOptions options;
  options.domain = a.domain;
  options.selector = a.selector;
  std::vector<std::string> parts = absl::StrSplit(a.canonicalization, '/');
  auto canon = [](absl::string_view s, dkim::Canon* c) {
    if (s == "simple") {
      *c = dkim::Canon::kSimple;
    } else if (s == "relaxed") {
      *c = dkim::Canon::kRelaxed;
    } else {
      return false;
    }
    return true;
  };
  if (parts.size() != 2 || !canon(parts[0], &options.header_canon) ||
      !canon(parts[1], &options.body_canon)) {
    err << "peregrine dkim sign: --canonicalization is HEADER/BODY, each "
           "\"simple\" or \"relaxed\"\n";
    return kExitUsage;
  }
  auto signer = dkim::Signer::Create(options, *key);
  if (!signer.ok()) {
    err << "peregrine dkim sign: " << signer.status().message() << "\n";
    return kExitUsage;
  }
  std::string message((std::istreambuf_iterator<char>(in)),
                      std::istreambuf_iterator<char>());
  absl::Time now = a.time >= 0 ? absl::FromUnixSeconds(a.time) : absl::Now();
  auto field = signer->Sign(message, now);
  if (!field.ok()) {
    err << "peregrine dkim sign: " << field.status().message() << "\n";
    return kExitRuntime;
  }
  out << *field << message;
  return 0;
}

}  // namespace peregrine
