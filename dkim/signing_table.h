// SigningTable: which keys sign which mail, loaded from configuration.
//
// Built on the main thread at start and on SIGHUP (key files are read again,
// so a rotated key takes effect without a restart), then shared read-only
// by every shard through a shared_ptr swapped as a whole.
//
// Each key signs the messages whose From domain its `match` list covers
// (default: its own d= domain; "*" matches every message, e.g. a platform
// signature; "*.example.com" matches subdomains). Several keys may match one
// message: each adds its own signature. A key that could not be loaded stays
// in the table as an error: mail it should sign is refused with
// Unavailable, to be deferred and retried, never sent unsigned.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dkim/signer.h"

namespace peregrine::dkim {

struct KeySpec {
  std::string domain;              // d=
  std::string selector;            // s=
  std::string key_file;            // PEM.
  std::vector<std::string> match;  // From domains; empty: {domain}.
  // "rsa-sha256" or "ed25519-sha256" when the operator states it: a key
  // file of the other kind is then an error (a mismatched key).
  std::string algorithm;
};

struct Policy {
  std::vector<KeySpec> keys;
  std::vector<std::string> headers = DefaultSignedHeaders();
  std::vector<std::string> oversign = DefaultOversignedHeaders();
  Canon header_canon = Canon::kRelaxed;
  Canon body_canon = Canon::kRelaxed;
  absl::Duration expiration = absl::ZeroDuration();
};

class SigningTable {
 public:
  static std::shared_ptr<const SigningTable> Load(const Policy& policy);

  struct Entry {
    KeySpec spec;
    absl::StatusOr<Signer> signer;  // The error if the key is unusable.
  };
  const std::vector<Entry>& entries() const { return entries_; }

  // The DKIM-Signature fields for `message` (empty when no key matches its
  // From domain), to put on top of it. Unavailable when a matching key is
  // unusable: hold the message.
  // `also_as`: the keys of that d= domain sign too, whatever the From
  // (mail forwarded for a local domain is signed as that domain).
  absl::StatusOr<std::string> Sign(absl::string_view message, absl::Time now,
                                   absl::string_view also_as = "") const;

  // The domain of the first From address, lower case; empty if none.
  static std::string FromDomain(const SplitMessage& message);

 private:
  std::vector<Entry> entries_;
};

}  // namespace peregrine::dkim
