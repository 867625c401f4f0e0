// `peregrine sendmail` (also run as `sendmail`): the classic interface that
// cron, PHP's mail(), git send-email and many applications call. It reads
// a message from standard input and submits it to the local daemon over
// loopback SMTP on its relay listener (a trusted network by default: no
// AUTH), then exits with a sysexits(3) code:
//   0 EX_OK, 64 EX_USAGE (a flag it does not take), 65 EX_DATAERR (no
//   recipients, no message), 67 EX_NOUSER (a recipient refused for good),
//   69 EX_UNAVAILABLE (the message refused for good), 75 EX_TEMPFAIL (the
//   daemon is down or said "try later": the caller should try again),
//   78 EX_CONFIG (no relay listener in the configuration).
//
// Flags, as Postfix's and sendmail's: -t (recipients from To, Cc and Bcc;
// Bcc is removed), -i / -oi (a line with a lone "." does not end the
// message), -f ADDR / -r ADDR (envelope sender; default: the user's name
// at server.hostname), -F NAME (the From header's name when one is
// added), -C FILE or --config FILE (default: $PEREGRINE_CONFIG, else
// /etc/peregrine/peregrine.toml when it exists, else the built-in
// defaults), --data-dir DIR; -oX, -v, -bm, -U, -n,
// -m, -e* and -h/-N/-R/-V/-B/-X with their argument are accepted and
// ignored. A From, Date and Message-ID header are added when missing.
// Header address lists (-t) are parsed by GMime (Debian's libgmime-3.0).
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace peregrine {

struct SendmailArgs {
  bool extract = false;       // -t
  bool dot_ends = true;       // Not -i/-oi: a lone "." line ends the input.
  std::string sender;         // -f / -r ("" or "<>": the null sender).
  bool sender_given = false;  // Else: the user's name at server.hostname.
  std::string full_name;      // -F
  std::string config_path;
  std::string data_dir;
  std::vector<std::string> recipients;
};

// The arguments after "sendmail". InvalidArgument names the flag.
absl::StatusOr<SendmailArgs> ParseSendmailArgs(
    const std::vector<std::string>& args);

struct PreparedMail {
  std::string message;  // CRLF line ends, headers completed.
  std::vector<std::string> recipients;
};

// The message as it is submitted: line ends made CRLF, input cut at a lone
// "." line when `dot_ends`, recipients taken from the header with -t (and
// Bcc removed), From/Date/Message-ID added when missing. InvalidArgument:
// no recipients.
absl::StatusOr<PreparedMail> PrepareMail(const std::string& input,
                                         const SendmailArgs& args,
                                         const std::string& sender,
                                         const std::string& hostname,
                                         absl::Time now);

// `peregrine sendmail ARGS`: reads `in`, submits, says what went wrong on
// `err`; returns the sysexits code.
int Sendmail(const std::vector<std::string>& args, std::istream& in,
             std::ostream& out, std::ostream& err);

}  // namespace peregrine
