// LocalMail: Peregrine's own domains at reception. Which domains it takes
// mail for from anyone, whether a recipient there exists (an alias takes
// it), and what a message for them becomes: its local recipients replaced
// by their alias targets (ORCPT keeps the address the client gave), SRS
// addresses of ours turned back into the original sender, and the return
// path of forwarded mail rewritten with SRS.
//
// The aliases files are read at Load() and again when one changes (looked
// at no more than once a second, on the calling thread). A file that no
// longer parses leaves the last good table in place and is logged once.
//
// Threads: every method from any thread (shards at RCPT and at the end of
// DATA, the admin API). Lifetime: made by the daemon before the listeners
// start and freed after they stop; it calls nothing back.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "mta/local/aliases.h"
#include "mta/local/srs.h"

namespace peregrine::local {

struct LocalOptions {
  std::vector<std::string> domains;  // Lower case.
  std::string aliases_dir;
  bool srs = true;
  SrsOptions srs_options;  // domain and secret; unused when !srs.
};

// A recipient as reception holds it.
struct Rcpt {
  std::string address;
  std::string orcpt;
  uint8_t notify = 0;
};

struct Rewritten {
  std::string sender;
  std::vector<Rcpt> recipients;
  // The local domain mail was forwarded for (the first), to DKIM-sign as;
  // empty when nothing was forwarded.
  std::string forwarded_for;
};

// Reads `dir`/DOMAIN for each domain; a missing file is an empty table.
absl::StatusOr<AliasTable> LoadAliases(const std::vector<std::string>& domains,
                                       const std::string& dir);

class LocalMail {
 public:
  explicit LocalMail(LocalOptions options);

  // Reads the aliases; an error names the file and line.
  absl::Status Load();

  // A local domain, or the SRS domain.
  bool Accepts(absl::string_view domain) const;
  bool IsLocal(absl::string_view domain) const;

  // For a recipient in a domain Accepts(): "" to take it, else the reply
  // line: 550 5.1.1 for an unknown user or a bad SRS address, 451 4.3.0
  // while the aliases are broken (a loop), so no mail is lost meanwhile.
  // Any other recipient: "".
  std::string CheckRecipient(absl::string_view address);

  // The message's envelope as it is to be queued. A recipient that no
  // longer resolves (the aliases changed since RCPT) is dropped and
  // logged; the result may then hold no recipients.
  Rewritten Rewrite(absl::string_view sender, std::vector<Rcpt> recipients,
                    absl::Time now);

  // The aliases now (for `alias resolve` on a running daemon, tests).
  AliasTable Table();

 private:
  void MaybeReload();

  const LocalOptions options_;
  absl::Mutex mu_;
  AliasTable table_ ABSL_GUARDED_BY(mu_);
  // What the files were when last read: "name size mtime" per domain.
  std::string stamp_ ABSL_GUARDED_BY(mu_);
  absl::Time checked_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::string last_error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace peregrine::local
