// Subcommands of `peregrine` that live in files of their own (cli.cc
// parses the command line and calls them).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "mta/config.h"
#include "nlohmann/json.hpp"

namespace peregrine {

struct KeygenArgs {
  std::string domain;
  std::string selector;
  std::string type = "rsa";
  int bits = 2048;
  std::string out;
  bool force = false;
};
// `peregrine dkim keygen`: a key written 0600 and the TXT record to publish.
int DkimKeygen(const KeygenArgs& a, std::ostream& out, std::ostream& err);

struct SignArgs {
  std::string key_file;
  std::string domain;
  std::string selector;
  std::string canonicalization = "relaxed/relaxed";
  int64_t time = -1;
};
// `peregrine dkim sign`: the DKIM-Signature field for the message on `in`.
int DkimSign(const SignArgs& a, std::istream& in, std::ostream& out,
             std::ostream& err);

// The whole of FILE, or of `in` for "-"; nullopt when FILE cannot be read.
std::optional<std::string> ReadInput(const std::string& file, std::istream& in);

struct SuppressionArgs {
  std::string config_path;
  std::string data_dir;
  std::string address;
  std::string scope;  // "", "tenant:NAME", "campaign:NAME".
  std::string category = "manual";
  std::string reason;
  std::string expires;  // "2027-01-01" or RFC 3339; "": never.
  std::string file;     // import: a CSV file, or "-".
};

// GET `path` on the running daemon's admin port (its address and token
// from `config`): the JSON answer, and its HTTP status in *status.
// Unavailable when the daemon is not running.
absl::StatusOr<nlohmann::json> AdminGet(const Config& config,
                                        const std::string& data_dir,
                                        const std::string& path, int* status);

struct SendTestArgs {
  std::string config_path;
  std::string data_dir;
  std::string to;
  std::string from;
  std::string server;  // host:port; empty: the local daemon.
  std::string tls;     // starttls, implicit, none; empty: by the port.
  std::string user;  // AUTH as; the password from PEREGRINE_PASSWORD or stdin.
  int timeout_s = 60;  // Following the message through the daemon.
};
// `peregrine send-test`: 0 only when the message was delivered.
int SendTest(const SendTestArgs& args, std::istream& in, std::ostream& out,
             std::ostream& err);

struct QueueControlArgs {
  std::string config_path;
  std::string data_dir;
  std::string domain;
  std::string mx_suffix;
  std::string duration;  // "2h"; "": until resumed.
  std::string reason;
  // retry, bounce, delete: which mail.
  std::string site;
  std::string campaign;
  std::string tenant;
  std::string id;
  std::string to;  // transfer: HOST:PORT.
  bool all = false;
};

// `peregrine queue suspend|resume|suspensions|summary|retry|bounce|delete`
// through the running daemon's admin API. Exit 0, 1 (refused, or the
// daemon is not running), 2 (usage).
int QueueControl(const std::string& what, const QueueControlArgs& args,
                 std::ostream& out, std::ostream& err);
// Adds those subcommands under `queue`, filling `args`.
void AddQueueControl(CLI::App& queue, QueueControlArgs& args);

struct AliasArgs {
  std::string config_path;
  std::string data_dir;
  std::string address;  // add, del, resolve; list: a domain, or "".
  std::vector<std::string> targets;
};
// Adds `alias add|del|list|resolve` to `app`, filling `args`.
void AddAliasCommands(CLI::App& app, AliasArgs& args);
// Exit 0, 1 (refused: no such alias, a loop, an unknown domain), 2 (usage).
int AliasCommand(const std::string& what, const AliasArgs& args,
                 std::ostream& out, std::ostream& err);

// what: list, export, add, remove, import. Exit status 0, 1 (something
// was refused or failed), 2 (usage).
int SuppressionCommand(const std::string& what, const SuppressionArgs& args,
                       std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace peregrine

namespace peregrine {

struct BounceParseArgs {
  std::string file;  // Or "-".
  std::string config_path;
  std::string data_dir;
  std::string rules;      // A rule file tried before the built-in rules.
  std::string recipient;  // The envelope recipient it came to (VERP).
};

// `peregrine bounce parse FILE|-`: what Peregrine reads from one bounce or
// feedback report, as JSON. Exit 0 when it names a recipient, 1 when not.
int BounceParse(const BounceParseArgs& args, std::istream& in,
                std::ostream& out, std::ostream& err);

}  // namespace peregrine
