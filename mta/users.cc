#include "mta/users.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/files.h"
#include "mta/delivery/shaping.h"

namespace peregrine {
namespace {

constexpr uint64_t kN = 16384, kR = 8, kP = 1;
constexpr size_t kHashBytes = 32;

bool Scrypt(absl::string_view password, absl::string_view salt, uint64_t n,
            uint64_t r, uint64_t p, unsigned char* out) {
  return EVP_PBE_scrypt(password.data(), password.size(),
                        reinterpret_cast<const unsigned char*>(salt.data()),
                        salt.size(), n, r, p, 64ull << 20, out,
                        kHashBytes) == 1;
}

bool ValidName(absl::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(c) &&
        std::string_view(".-_@+").find(c) == std::string_view::npos) {
      return false;
    }
  }
  return true;
}

}  // namespace

std::string HashPassword(absl::string_view password) {
  unsigned char salt[16];
  RAND_bytes(salt, sizeof(salt));
  unsigned char hash[kHashBytes];
  Scrypt(password,
         absl::string_view(reinterpret_cast<char*>(salt), sizeof(salt)), kN, kR,
         kP, hash);
  return absl::StrCat("scrypt$", kN, "$", kR, "$", kP, "$",
                      absl::Base64Escape(absl::string_view(
                          reinterpret_cast<char*>(salt), sizeof(salt))),
                      "$",
                      absl::Base64Escape(absl::string_view(
                          reinterpret_cast<char*>(hash), sizeof(hash))));
}

bool VerifyPassword(absl::string_view record, absl::string_view password) {
  std::vector<absl::string_view> f = absl::StrSplit(record, '$');
  uint64_t n, r, p;
  std::string salt, expected;
  if (f.size() != 6 || f[0] != "scrypt" || !absl::SimpleAtoi(f[1], &n) ||
      !absl::SimpleAtoi(f[2], &r) || !absl::SimpleAtoi(f[3], &p) ||
      !absl::Base64Unescape(f[4], &salt) ||
      !absl::Base64Unescape(f[5], &expected) || expected.size() != kHashBytes ||
      n > (1u << 20) || r > 32 || p > 16) {
    return false;
  }
  unsigned char hash[kHashBytes];
  if (!Scrypt(password, salt, n, r, p, hash)) return false;
  return CRYPTO_memcmp(hash, expected.data(), kHashBytes) == 0;
}

absl::StatusOr<UsersFile> UsersFile::Load(const std::string& path) {
  UsersFile users;
  std::ifstream in(path);
  if (!in) {
    if (errno == ENOENT) return users;
    return absl::PermissionDeniedError(absl::StrCat(
        "users file ", path, ": cannot read: ", CannotReadReason(path, errno)));
  }
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    absl::string_view l = absl::StripAsciiWhitespace(line);
    if (l.empty() || l.front() == '#') continue;
    size_t colon = l.find(':');
    if (colon == absl::string_view::npos || !ValidName(l.substr(0, colon)) ||
        !absl::StartsWith(l.substr(colon + 1), "scrypt$")) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", number,
          ": expected \"name:scrypt$...\" (write it with peregrine user add)"));
    }
    std::string name(l.substr(0, colon));
    std::vector<std::string> fields = absl::StrSplit(l.substr(colon + 1), ':');
    users.hashes_[name] = fields[0];
    for (size_t i = 1; i < fields.size(); ++i) {
      absl::string_view f = fields[i];
      if (absl::ConsumePrefix(&f, "rate=")) {
        if (absl::Status s = users.SetRate(name, f); !s.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat(path, ":", number, ": ", s.message()));
        }
        continue;
      }
      if (!absl::ConsumePrefix(&f, "senders=")) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ":", number, ": unknown field \"", fields[i],
            "\" (after the password hash: senders=ADDRESS,@DOMAIN or "
            "rate=100/h)"));
      }
      std::vector<std::string> senders =
          absl::StrSplit(f, ',', absl::SkipEmpty());
      if (absl::Status s = users.SetSenders(name, senders); !s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", number, ": ", s.message()));
      }
    }
  }
  return users;
}

absl::Status UsersFile::Save(const std::string& path) const {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot write ", tmp, ": ", std::strerror(errno)));
  }
  std::string text = "# Peregrine users: edit with `peregrine user`.\n";
  for (const auto& [name, hash] : hashes_) {
    absl::StrAppend(&text, name, ":", hash);
    auto it = senders_.find(name);
    if (it != senders_.end() && !it->second.empty()) {
      absl::StrAppend(&text, ":senders=", absl::StrJoin(it->second, ","));
    }
    if (auto r = rates_.find(name); r != rates_.end()) {
      absl::StrAppend(&text, ":rate=", r->second);
    }
    text += "\n";
  }
  bool ok = ::write(fd, text.data(), text.size()) ==
                static_cast<ssize_t>(text.size()) &&
            ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status UsersFile::Set(absl::string_view name,
                            absl::string_view password) {
  if (!ValidName(name)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", name, "' is not a user name: letters, digits and .-_@+ only"));
  }
  if (password.size() < 8) {
    return absl::InvalidArgumentError(
        "the password needs 8 characters or more");
  }
  hashes_[std::string(name)] = HashPassword(password);
  return absl::OkStatus();
}

bool UsersFile::Remove(absl::string_view name) {
  senders_.erase(std::string(name));
  rates_.erase(std::string(name));
  return hashes_.erase(std::string(name)) > 0;
}

absl::Status UsersFile::SetSenders(absl::string_view name,
                                   std::vector<std::string> senders) {
  for (std::string& s : senders) {
    s = absl::AsciiStrToLower(absl::StripAsciiWhitespace(s));
    size_t at = s.find('@');
    bool ok = at != std::string::npos && at + 1 < s.size() &&
              s.find('@', at + 1) == std::string::npos &&
              s.find_first_of(" ,:<>\"") == std::string::npos &&
              s.find('.', at) != std::string::npos;
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sender \"", s,
          "\": give an address (app@example.com) or a domain (@example.com)"));
    }
  }
  if (senders.empty()) {
    senders_.erase(std::string(name));
  } else {
    senders_[std::string(name)] = std::move(senders);
  }
  return absl::OkStatus();
}

absl::Status UsersFile::SetRate(absl::string_view name,
                                absl::string_view rate) {
  if (rate.empty() || rate == "unlimited" || rate == "0") {
    rates_.erase(std::string(name));
    return absl::OkStatus();
  }
  if (!delivery::TokenBucket::Parse(rate).ok() ||
      !absl::StrContains(rate, '/')) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rate \"", rate, "\": give messages per time, like 100/h or 10/m"));
  }
  rates_[std::string(name)] = std::string(rate);
  return absl::OkStatus();
}

std::string UsersFile::Rate(absl::string_view name) const {
  auto it = rates_.find(std::string(name));
  return it == rates_.end() ? "" : it->second;
}

std::vector<std::string> UsersFile::Senders(absl::string_view name) const {
  auto it = senders_.find(std::string(name));
  return it == senders_.end() ? std::vector<std::string>() : it->second;
}

std::string UsersFile::SenderRefusal(absl::string_view user,
                                     absl::string_view address) const {
  auto it = senders_.find(std::string(user));
  // The null sender (a notice the application sends) is not an identity.
  if (it == senders_.end() || it->second.empty() || address.empty()) {
    return "";
  }
  std::string a = absl::AsciiStrToLower(address);
  size_t at = a.rfind('@');
  for (const std::string& rule : it->second) {
    if (rule == a) return "";
    if (rule[0] == '@' && at != std::string::npos && a.substr(at) == rule) {
      return "";
    }
  }
  return absl::StrCat("user ", user, " may send as ",
                      absl::StrJoin(it->second, ", "), " only");
}

bool UsersFile::Contains(absl::string_view name) const {
  return hashes_.count(std::string(name)) > 0;
}

bool UsersFile::Check(absl::string_view name,
                      absl::string_view password) const {
  auto it = hashes_.find(std::string(name));
  // An unknown user costs the same scrypt as a known one.
  static const std::string* dummy = new std::string(HashPassword("x"));
  bool ok = VerifyPassword(it == hashes_.end() ? *dummy : it->second, password);
  return ok && it != hashes_.end();
}

std::vector<std::string> UsersFile::Names() const {
  std::vector<std::string> out;
  for (const auto& [name, hash] : hashes_) out.push_back(name);
  return out;
}

}  // namespace peregrine
