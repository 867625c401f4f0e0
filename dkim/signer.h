// Signer: makes one DKIM-Signature field for a message (RFC 6376 §5).
//
// Pure: message bytes and the time in, the field out; no I/O, any thread.
// One Signer per (domain, selector, key); several Signers on one message
// give several signatures (RSA and Ed25519, or the author's domain and the
// platform's). A message is signed once, before it is queued, never per
// recipient or per attempt.
//
// Headers signed: each name of `headers` as often as it occurs (bottom-up,
// §5.4.2), and each name of `oversign` once more, so that a copy added on
// the way breaks the signature instead of being trusted (§8.15).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dkim/canonicalize.h"
#include "dkim/key.h"

namespace peregrine::dkim {

// RFC 6376 §5.4.1's list, with the list and feedback headers bulk senders
// rely on (List-Unsubscribe-Post for one-click unsubscribe, Feedback-ID).
const std::vector<std::string>& DefaultSignedHeaders();
// From, To, Subject, Date, Message-ID, List-Unsubscribe.
const std::vector<std::string>& DefaultOversignedHeaders();

struct SignerOptions {
  std::string domain;    // d=
  std::string selector;  // s=
  std::string identity;  // i=, optional ("@sub.example.com").
  Canon header_canon = Canon::kRelaxed;
  Canon body_canon = Canon::kRelaxed;
  std::vector<std::string> headers = DefaultSignedHeaders();
  std::vector<std::string> oversign = DefaultOversignedHeaders();
  // x= is t= plus this when positive; no x= otherwise.
  absl::Duration expiration = absl::ZeroDuration();
};

class Signer {
 public:
  // Checks the domain and selector syntax.
  static absl::StatusOr<Signer> Create(SignerOptions options,
                                       std::shared_ptr<const PrivateKey> key);

  // The "DKIM-Signature: ...\r\n" field, folded, to put on top of the
  // message.
  absl::StatusOr<std::string> Sign(absl::string_view message,
                                   absl::Time now) const;

  const SignerOptions& options() const { return options_; }
  const PrivateKey& key() const { return *key_; }

 private:
  Signer(SignerOptions options, std::shared_ptr<const PrivateKey> key)
      : options_(std::move(options)), key_(std::move(key)) {}

  SignerOptions options_;
  std::shared_ptr<const PrivateKey> key_;
};

// The pieces, public for golden tests against published examples.
// The names h= lists for this message, in order.
std::vector<std::string> SignedHeaderNames(
    const SplitMessage& message, const std::vector<std::string>& headers,
    const std::vector<std::string>& oversign);
// The data the signature covers: the canonical fields named by `h` (each
// name takes the next occurrence from the bottom; a name with none left adds
// nothing), then the canonical signature field `signature_field`, which ends
// in "b=", without its final CRLF (§3.7).
std::string HeaderHashInput(const SplitMessage& message,
                            const std::vector<std::string>& h,
                            absl::string_view signature_field, Canon canon);
// base64 of the body hash.
std::string BodyHashBase64(absl::string_view body, Canon canon);

}  // namespace peregrine::dkim
