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
#include "absl/strings/str_split.h"
#include "base/files.h"

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
    users.hashes_[std::string(l.substr(0, colon))] =
        std::string(l.substr(colon + 1));
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
  for (const auto& [name, hash] : hashes_)
    absl::StrAppend(&text, name, ":", hash, "\n");
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
  return hashes_.erase(std::string(name)) > 0;
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
