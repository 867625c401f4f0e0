// Aliases: where mail for Peregrine's own domains goes. Peregrine keeps no
// mailboxes; an address of a local domain is accepted only when an alias
// forwards it somewhere.
//
// One file per domain (chasquid's layout), `aliases/DOMAIN`:
//
//   # comment
//   alice: alice@gmail.example
//   team: alice, bob@elsewhere.example     # "alice": alice@DOMAIN
//   *: me@personal.example                  # catch-all
//
// A local part is looked up as written (case folded), then without its
// "+suffix" ("alice+news" → "alice"), then as "*". A target without '@' is
// a user of the same domain; a target in any local domain is resolved
// again, up to 10 levels, so a loop ends with an error, never a hang. A
// pipe ("| command") or file target is refused: Peregrine forwards only.
//
// Pure: text in, tables out; LocalMail (local_mail.h) reads the files.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace peregrine::local {

struct Alias {
  std::string user;                  // Local part, lower case; "*" catch-all.
  std::vector<std::string> targets;  // As written (an address, or a user).
  int line = 0;
};

// One domain's aliases, by user.
struct AliasFile {
  std::string domain;  // Lower case.
  std::map<std::string, Alias> aliases;
};

// Parses one domain's file. Errors name `source`, the line and what to fix.
absl::StatusOr<AliasFile> ParseAliases(absl::string_view text,
                                       absl::string_view domain,
                                       absl::string_view source);

// The file's text for `file` (what `peregrine alias add` writes).
std::string FormatAliases(const AliasFile& file);

// Every local domain's aliases, by domain.
using AliasTable = std::map<std::string, AliasFile>;

struct Resolution {
  // Addresses outside the local domains, in order, without repeats.
  std::vector<std::string> targets;
  // How each was reached, for `alias resolve`: "a@x → team@x → b@y".
  std::vector<std::string> paths;
};

// Where mail for `address` goes. NotFound when its domain is local and
// nothing matches (an unknown user: 550 5.1.1 at RCPT); FailedPrecondition
// for a loop or a chain deeper than 10; InvalidArgument when the domain is
// not local.
absl::StatusOr<Resolution> Resolve(const AliasTable& table,
                                   absl::string_view address);

// A syntactically usable mailbox: local@domain, no blanks, controls or <>.
bool PlainMailbox(absl::string_view address);

}  // namespace peregrine::local
