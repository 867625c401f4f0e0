// libFuzzer target: arbitrary bytes as a DKIM private key file into
// dkim::PrivateKey::FromPem() (OpenSSL's PEM and key decoders, then our
// checks: key type, RSA size limits). Key files come from operators and
// from `dkim keygen`; a damaged or hostile one must be refused with a
// message, never crash the daemon. Invariant: a key accepted can sign.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "dkim/key.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string pem(reinterpret_cast<const char*>(data), size);
  auto key = peregrine::dkim::PrivateKey::FromPem(pem, "fuzz key");
  if (!key.ok()) {
    if (key.status().message().empty()) std::abort();
    return 0;
  }
  if ((*key)->algorithm().empty()) std::abort();
  if (!(*key)->Sign("data").ok()) std::abort();
  return 0;
}
