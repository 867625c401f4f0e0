// What a submission server adds to a message it accepts (RFC 6409 §8.3):
// a Message-ID and a Date when the client left them out. Mail without a
// Message-ID is refused or junked by the large receivers, and many small
// applications (the Metabase / Odoo kind) never write one.
//
// Pure functions: the message in, the header lines to add out; the time and
// the random source are parameters. The header section is read as RFC 5322
// §2.2 says: field lines up to the first empty line, continuation lines
// starting with a space or tab, names compared case-insensitively.
#pragma once

#include <string>

#include "absl/random/bit_gen_ref.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace peregrine {

// Does the header section of `message` (CRLF line ends) have a field
// named `name`?
bool HasHeaderField(absl::string_view message, absl::string_view name);

// The fields to put in front of `message`: "Message-ID: <...@hostname>"
// and "Date: ..." (UTC), each only when missing, each ending in CRLF.
std::string MissingSubmissionFields(absl::string_view message,
                                    absl::string_view hostname, absl::Time now,
                                    absl::BitGenRef random);

}  // namespace peregrine
