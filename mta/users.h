// Users: the accounts that may AUTH on submission, in a users file.
//
// One line per user, "name:scrypt$N$r$p$salt$hash" (salt and hash in
// base64), then optionally ":senders=a@example.com,@example.org": the
// addresses and domains the user may send as (MAIL FROM and the From
// header; none listed: any), and ":rate=100/h": how many messages it may
// send (none: no limit), mode 0600. Passwords are hashed with scrypt
// (OpenSSL's EVP_PBE_scrypt, N=16384 r=8 p=1: about 16 MiB and tens of
// milliseconds per check, so that a stolen file resists guessing). Checks are
// slow on purpose: the daemon runs them off the shard threads (see auth.h).
// Read by the daemon at start and on SIGHUP; written by `peregrine user`.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace peregrine {

class UsersFile {
 public:
  // A missing file is an empty one (no user can log in yet).
  static absl::StatusOr<UsersFile> Load(const std::string& path);
  // Writes atomically (temporary file, rename), mode 0600.
  absl::Status Save(const std::string& path) const;

  // Name: letters, digits and ".-_@+": what a client types as its login.
  absl::Status Set(absl::string_view name, absl::string_view password);
  bool Remove(absl::string_view name);
  bool Contains(absl::string_view name) const;
  // Constant work whether or not the user exists (no timing oracle).
  bool Check(absl::string_view name, absl::string_view password) const;
  std::vector<std::string> Names() const;

  // Sender rules: "user@example.com" (that address) or "@example.com" (any
  // address of that domain). Empty: the user may send as anyone.
  absl::Status SetSenders(absl::string_view name,
                          std::vector<std::string> senders);
  std::vector<std::string> Senders(absl::string_view name) const;
  // "" when `user` may send as `address`, else why not (for a reply).
  std::string SenderRefusal(absl::string_view user,
                            absl::string_view address) const;

  // A message rate ("100/h", "10/m"; "" or "unlimited": none).
  absl::Status SetRate(absl::string_view name, absl::string_view rate);
  std::string Rate(absl::string_view name) const;

 private:
  std::map<std::string, std::string> rates_;
  std::map<std::string, std::string> hashes_;  // name -> "scrypt$..."
  std::map<std::string, std::vector<std::string>> senders_;
};

// The scrypt record of a password, with a fresh random salt.
std::string HashPassword(absl::string_view password);
bool VerifyPassword(absl::string_view record, absl::string_view password);

}  // namespace peregrine
