#include "mta/cli.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "dkim/key.h"
#include "dkim/signer.h"
#include "dkim/signing_table.h"
#include "mta/advice.h"
#include "mta/bounce/classifier.h"
#include "mta/cli_commands.h"
#include "mta/config.h"
#include "mta/daemon.h"
#include "mta/dns_records.h"
#include "mta/doctor/doctor.h"
#include "mta/sendmail.h"
#include "mta/users.h"
#include "mta/version.h"
#include "queue/rocksdb_store.h"
#include "tls/tls.h"

namespace peregrine {
namespace {

constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

int Serve(const std::string& config_path, const std::string& data_dir,
          const std::string& run_as, std::ostream& err) {
  absl::StatusOr<Config> config =
      config_path.empty() ? DefaultConfig() : LoadConfigFile(config_path);
  if (!config.ok()) {
    err << "peregrine: configuration error:\n"
        << config.status().message() << "\n";
    return kExitUsage;
  }
  // --user, else server.user, else $PEREGRINE_USER.
  if (!run_as.empty()) {
    config->user = run_as;
  } else if (const char* env = getenv("PEREGRINE_USER");
             config->user.empty() && env != nullptr && *env != '\0') {
    config->user = env;
  }
  // Before any thread exists (the Daemon's members start some): every
  // thread inherits the mask, and SIGTERM reaches only the main thread's
  // sigtimedwait, which drains.
  sigset_t signals;
  sigemptyset(&signals);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGPIPE}) sigaddset(&signals, sig);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  Daemon daemon(*std::move(config), config_path, data_dir);
  absl::Status started = daemon.Start();
  if (!started.ok()) {
    err << "peregrine: cannot start: " << started.message() << "\n";
    return started.code() == absl::StatusCode::kUnavailable ? kExitRuntime
                                                            : kExitUsage;
  }
  return daemon.Run();
}

// The files a configuration names, loaded as `serve` loads them, so that
// `config check` says OK only for what `serve` will accept.
std::vector<std::string> CheckFiles(const Config& config) {
  std::vector<std::string> errors;
  if (!config.tls_cert_file.empty()) {
    auto tls = tls::ServerContext::FromFiles(config.tls_cert_file,
                                             config.tls_key_file);
    if (!tls.ok()) {
      errors.push_back(absl::StrCat(config.Where("tls.cert_file"), ": ",
                                    tls.status().message()));
    }
  }
  auto dkim = dkim::SigningTable::Load(config.dkim);
  for (const auto& e : dkim->entries()) {
    if (e.signer.ok()) continue;
    errors.push_back(absl::StrCat(
        config.Where("dkim.keys"), ": d=", e.spec.domain,
        " s=", e.spec.selector, ": ", e.signer.status().message(),
        " (serve would hold that domain's mail until it is fixed)"));
  }
  auto rules = bounce::Classifier::Create(config.bounce_rules_file);
  if (!rules.ok()) {
    errors.push_back(absl::StrCat(config.Where("bounce.rules_file"), ": ",
                                  rules.status().message()));
  }
  auto users = UsersFile::Load(config.UsersFilePath());
  if (!users.ok()) {
    errors.push_back(absl::StrCat(config.Where("auth.users_file"), ": ",
                                  users.status().message()));
  }
  return errors;
}

struct BounceArgs {
  std::vector<std::string> reply;
  std::string rules;   // --rules FILE
  std::string config;  // --config FILE: its bounce.rules_file
};

// `peregrine bounce classify REPLY`: the category and the rule that said so.
int BounceClassify(const BounceArgs& args, std::ostream& out,
                   std::ostream& err) {
  std::string rules = args.rules;
  if (rules.empty() && !args.config.empty()) {
    auto config = LoadConfigFile(args.config);
    if (!config.ok()) {
      err << config.status().message() << "\n";
      return kExitUsage;
    }
    rules = config->bounce_rules_file;
  }
  auto classifier = bounce::Classifier::Create(rules);
  if (!classifier.ok()) {
    err << "peregrine bounce classify: " << classifier.status().message()
        << "\n";
    return kExitUsage;
  }
  Reply reply = Reply::Parse(absl::StrJoin(args.reply, " "));
  bounce::Verdict v = (*classifier)->Classify(reply);
  out << "reply:    " << reply.ToString() << "\n";
  out << "category: " << bounce::CategoryName(v.category) << "\n";
  if (v.rule.empty()) {
    out << "rule:     none matched\n";
  } else {
    out << "rule:     " << v.rule << " '" << v.pattern << "'\n";
  }
  return 0;
}

int ConfigCheck(const std::string& path, std::ostream& out, std::ostream& err) {
  auto config = LoadConfigFile(path);
  if (!config.ok()) {
    err << config.status().message() << "\n";
    return kExitUsage;
  }
  std::vector<std::string> errors = CheckFiles(*config);
  for (const std::string& e : errors) err << e << "\n";
  if (!errors.empty()) return kExitUsage;
  for (const std::string& w : ConfigWarnings(*config)) {
    err << "warning: " << w << "\n";
  }
  out << path << ": OK (" << config->lines.size()
      << " settings from the file, the rest default)\n";
  return 0;
}

struct QueueArgs {
  std::string config_path;
  std::string data_dir;
  std::string state;
  std::string domain;
  std::string sender;
  int limit = 100;
  std::string id;
  bool body = false;
};

// Opens the queue of a stopped daemon, or a read-only view of a running
// daemon's queue.
absl::StatusOr<std::unique_ptr<queue::RocksStore>> OpenQueueForCli(
    const QueueArgs& a) {
  absl::StatusOr<Config> config =
      a.config_path.empty() ? DefaultConfig() : LoadConfigFile(a.config_path);
  if (!config.ok()) return config.status();
  queue::RocksStoreOptions options;
  options.path =
      (a.data_dir.empty() ? config->data_dir : a.data_dir) + "/queue";
  if (!std::filesystem::exists(options.path)) {
    return absl::NotFoundError(
        absl::StrCat("no queue at ", options.path, " (wrong --data-dir?)"));
  }
  options.shards = 65535;  // Keep every recipient where it is.
  options.keep_finished = config->queue_keep_finished;
  // Always a read-only view that writes nothing: it works on a full disk,
  // beside a running daemon, and cannot change a stopped one's queue.
  options.read_only = true;
  auto view = queue::RocksStore::Open(options);
  std::string data_dir = a.data_dir.empty() ? config->data_dir : a.data_dir;
  int lock =
      ::open((data_dir + "/peregrine.lock").c_str(), O_RDONLY | O_CLOEXEC);
  bool running = lock >= 0 && ::flock(lock, LOCK_SH | LOCK_NB) != 0 &&
                 errno == EWOULDBLOCK;
  if (lock >= 0) ::close(lock);
  if (view.ok() && running) {
    std::cerr << "(the daemon is running: a read-only view of its queue as "
                 "of now)\n";
  }
  return view;
}

void PrintMessage(const queue::StoredMessage& m, std::ostream& out) {
  out << queue::FormatMessageId(m.id) << "  "
      << absl::FormatTime("%Y-%m-%d %H:%M:%S", m.envelope.received,
                          absl::UTCTimeZone())
      << "  " << m.envelope.body_bytes << " bytes  from <" << m.envelope.sender
      << ">\n";
  for (const auto& r : m.recipients) {
    out << "    " << queue::StateName(r.state) << "  <" << r.spec.address
        << ">  attempts=" << r.attempts;
    if (r.last_reply.code != 0 || !r.last_reply.text.empty()) {
      out << "  last: " << r.last_reply.ToString();
    }
    out << "\n";
    if (r.state != queue::RecipientState::kDelivered &&
        r.last_reply.code != 0) {
      std::string advice = Advice(r.last_reply.ToString());
      if (!advice.empty()) out << "      → " << advice << "\n";
    }
  }
}

int QueueCommand(const std::string& what, const QueueArgs& a, std::ostream& out,
                 std::ostream& err) {
  auto store = OpenQueueForCli(a);
  if (!store.ok()) {
    err << "peregrine queue: " << store.status().message() << "\n";
    return kExitUsage;
  }
  if (what == "stats") {
    auto c = (*store)->Counts();
    if (!c.ok()) {
      err << "peregrine queue: " << c.status().message() << "\n";
      return kExitRuntime;
    }
    out << "messages " << c->messages << ", recipients " << c->recipients
        << "\n";
    for (int i = 0; i <= 4; ++i) {
      out << "  " << queue::StateName(static_cast<queue::RecipientState>(i))
          << " " << c->by_state[i] << "\n";
    }
    // Finished recipients leave the queue: their totals are kept apart.
    out << "finished since the queue was made: delivered "
        << c->totals[static_cast<int>(queue::RecipientState::kDelivered)]
        << ", failed "
        << c->totals[static_cast<int>(queue::RecipientState::kFailed)]
        << ", expired "
        << c->totals[static_cast<int>(queue::RecipientState::kExpired)] << "\n";
    queue::Spool::DiskUse spool = (*store)->SpoolUsage();
    out << "spool: " << spool.segments << " segment files and " << spool.spares
        << " spares, " << absl::StrFormat("%.1f", spool.bytes / 1048576.0)
        << " MiB on disk\n";
    out << "pending by domain:\n";
    for (const auto& [domain, g] : c->by_domain) {
      out << "  " << domain << " " << g.recipients << "\n";
    }
    return 0;
  }
  if (what == "list") {
    queue::ListFilter f;
    if (!a.state.empty()) {
      f.has_state = true;
      if (!queue::ParseStateName(a.state, &f.state)) {
        err << "peregrine queue list: --state is queued, deferred, delivered, "
               "failed or expired\n";
        return kExitUsage;
      }
    }
    f.domain = a.domain;
    f.sender = a.sender;
    f.limit = static_cast<size_t>(a.limit);
    auto list = (*store)->List(f);
    if (!list.ok()) {
      err << "peregrine queue: " << list.status().message() << "\n";
      return kExitRuntime;
    }
    for (const auto& m : *list) PrintMessage(m, out);
    return 0;
  }
  queue::MessageId id;
  if (!queue::ParseMessageId(a.id, &id)) {
    err << "peregrine queue show: '" << a.id
        << "' is not a queue id (16 hex digits, as queue list prints)\n";
    return kExitUsage;
  }
  auto m = (*store)->Read(id, a.body);
  if (absl::IsNotFound(m.status())) m = (*store)->Lookup(id);  // Finished?
  if (!m.ok()) {
    err << "peregrine queue show: " << m.status().message() << "\n";
    return absl::IsNotFound(m.status()) ? kExitUsage : kExitRuntime;
  }
  if (m->finished) {
    out << "(finished: no longer in the queue; this is the record kept of it "
           "for queue.keep_finished)\n";
  }
  PrintMessage(*m, out);
  if (a.body && !m->finished) out << "\n" << m->body;
  return 0;
}

struct UserArgs {
  std::string config_path;
  std::string data_dir;
  std::string users_file;
  std::string name;
  std::vector<std::string> senders;  // user senders NAME [RULE...]
  std::string rate;                  // user rate NAME 100/h
};

// A password from the terminal (echo off) or, when standard input is not a
// terminal, its first line (for scripts: echo pw | peregrine user add NAME).
absl::StatusOr<std::string> ReadPassword(absl::string_view prompt,
                                         std::ostream& err) {
  std::string password;
  if (isatty(STDIN_FILENO)) {
    err << prompt << std::flush;
    termios old{}, quiet{};
    tcgetattr(STDIN_FILENO, &old);
    quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    std::getline(std::cin, password);
    tcsetattr(STDIN_FILENO, TCSANOW, &old);
    err << "\n";
  } else if (!std::getline(std::cin, password)) {
    return absl::InvalidArgumentError("no password on standard input");
  }
  if (!password.empty() && password.back() == '\r') password.pop_back();
  return password;
}

int UserCommand(const std::string& what, const UserArgs& a, std::ostream& out,
                std::ostream& err) {
  std::string path = a.users_file;
  if (path.empty()) {
    absl::StatusOr<Config> config =
        a.config_path.empty() ? DefaultConfig() : LoadConfigFile(a.config_path);
    if (!config.ok()) {
      err << config.status().message() << "\n";
      return kExitUsage;
    }
    if (!a.data_dir.empty()) config->data_dir = a.data_dir;
    path = config->UsersFilePath();
  }
  auto users = UsersFile::Load(path);
  if (!users.ok()) {
    err << "peregrine user: " << users.status().message() << "\n";
    return kExitUsage;
  }
  if (what == "list") {
    for (const std::string& name : users->Names()) {
      std::vector<std::string> senders = users->Senders(name);
      std::string rate = users->Rate(name);
      out << name
          << (senders.empty()
                  ? std::string()
                  : absl::StrCat("  sends as ", absl::StrJoin(senders, ", ")))
          << (rate.empty() ? std::string() : absl::StrCat("  at most ", rate))
          << "\n";
    }
    return 0;
  }
  if (what == "rate") {
    if (!users->Contains(a.name)) {
      err << "peregrine user rate: no user '" << a.name << "' in " << path
          << "\n";
      return kExitUsage;
    }
    if (absl::Status s = users->SetRate(a.name, a.rate); !s.ok()) {
      err << "peregrine user rate: " << s.message() << "\n";
      return kExitUsage;
    }
  } else if (what == "senders") {
    if (!users->Contains(a.name)) {
      err << "peregrine user senders: no user '" << a.name << "' in " << path
          << " (peregrine user add " << a.name << " first)\n";
      return kExitUsage;
    }
    if (absl::Status s = users->SetSenders(a.name, a.senders); !s.ok()) {
      err << "peregrine user senders: " << s.message() << "\n";
      return kExitUsage;
    }
  } else if (what == "del") {
    if (!users->Remove(a.name)) {
      err << "peregrine user del: no user '" << a.name << "' in " << path
          << "\n";
      return kExitUsage;
    }
  } else if (what == "check") {
    auto password = ReadPassword("Password: ", err);
    if (!password.ok()) {
      err << "peregrine user check: " << password.status().message() << "\n";
      return kExitUsage;
    }
    bool ok = users->Check(a.name, *password);
    out << a.name
        << (ok ? ": password accepted\n" : ": authentication fails\n");
    return ok ? 0 : 1;
  } else {  // add
    auto password = ReadPassword("New password: ", err);
    if (!password.ok()) {
      err << "peregrine user add: " << password.status().message() << "\n";
      return kExitUsage;
    }
    if (isatty(STDIN_FILENO)) {
      auto again = ReadPassword("Again: ", err);
      if (!again.ok() || *again != *password) {
        err << "peregrine user add: the passwords differ\n";
        return kExitUsage;
      }
    }
    if (absl::Status s = users->Set(a.name, *password); !s.ok()) {
      err << "peregrine user add: " << s.message() << "\n";
      return kExitUsage;
    }
  }
  std::error_code ec;
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (absl::Status s = users->Save(path); !s.ok()) {
    err << "peregrine user: " << s.message() << "\n";
    return kExitRuntime;
  }
  // Run as root in a data directory that belongs to the service user: the
  // file goes to that user, or the daemon could not read it (mode 0600).
  struct stat dir;
  std::string owner_note;
  if (geteuid() == 0 &&
      ::stat((parent.empty() ? std::string(".") : parent.string()).c_str(),
             &dir) == 0 &&
      dir.st_uid != 0) {
    if (::chown(path.c_str(), dir.st_uid, dir.st_gid) == 0) {
      owner_note =
          absl::StrCat(", owned by uid ", dir.st_uid, " like its directory");
    }
  }
  std::string where =
      std::filesystem::absolute(path).lexically_normal().string();
  out << (what == "del" ? "removed " : "saved ") << a.name << " in " << where
      << owner_note << " (a running daemon using this file picks it up within "
      << "a second)\n";
  if (a.users_file.empty() && a.config_path.empty() && a.data_dir.empty()) {
    out << "note: no --config or --data-dir given, so this is the default "
           "data directory under the current directory; a daemon started "
           "with --config FILE keeps its users in that file's "
           "[server] data_dir: pass the same --config\n";
  }
  return 0;
}

}  // namespace

int RunCli(int argc, const char* const* argv, std::ostream& out,
           std::ostream& err) {
  // sendmail's flags (-oi, -fADDR, -t) are not CLI11's: parsed apart.
  if (argc >= 2 && absl::string_view(argv[1]) == "sendmail") {
    return Sendmail(std::vector<std::string>(argv + 2, argv + argc), std::cin,
                    out, err);
  }
  CLI::App app{"Peregrine: a high-throughput mail transfer agent.",
               "peregrine"};
  app.set_version_flag("--version", absl::StrCat("peregrine ", kVersion));
  app.require_subcommand(1);

  std::string config_path, data_dir, run_as;
  CLI::App* serve = app.add_subcommand(
      "serve",
      "Run the MTA (no --config: built-in defaults on loopback ports)");
  serve->add_option("-c,--config", config_path, "TOML configuration file");
  serve->add_option("--data-dir", data_dir,
                    "Queue directory (overrides server.data_dir)");
  serve->add_option("--user", run_as,
                    "Run as this user once bound (overrides server.user; "
                    "default also from $PEREGRINE_USER)");

  CLI::App* config =
      app.add_subcommand("config", "Check or print configuration");
  config->require_subcommand(1);
  std::string check_path;
  CLI::App* check = config->add_subcommand(
      "check", "Validate a configuration file; exit 2 naming each problem");
  check->add_option("file", check_path, "TOML configuration file")->required();
  CLI::App* defaults = config->add_subcommand(
      "defaults", "Print the full default configuration, every key commented");

  CLI::App* dkim_cmd = app.add_subcommand("dkim", "DKIM keys and signing");
  dkim_cmd->require_subcommand(1);
  KeygenArgs keygen_args;
  CLI::App* keygen = dkim_cmd->add_subcommand(
      "keygen",
      "Make a signing key (written mode 0600) and print the DNS TXT record "
      "to publish");
  keygen->add_option("--domain", keygen_args.domain, "Signing domain (d=)")
      ->required();
  keygen->add_option("--selector", keygen_args.selector, "Selector (s=)")
      ->required();
  keygen->add_option("--type", keygen_args.type, "rsa (default) or ed25519")
      ->check(CLI::IsMember({"rsa", "ed25519"}));
  keygen->add_option("--bits", keygen_args.bits, "RSA key size (default 2048)")
      ->check(CLI::Range(dkim::PrivateKey::kMinRsaBits,
                         dkim::PrivateKey::kMaxRsaBits));
  keygen->add_option("--out", keygen_args.out,
                     "Key file (default dkim/DOMAIN/SELECTOR.key)");
  keygen->add_flag("--force", keygen_args.force,
                   "Replace an existing key file");

  SignArgs sign_args;
  CLI::App* sign = dkim_cmd->add_subcommand(
      "sign", "Sign the message on standard input; print the signed message");
  sign->add_option("--key", sign_args.key_file, "PEM private key")->required();
  sign->add_option("--domain", sign_args.domain, "Signing domain (d=)")
      ->required();
  sign->add_option("--selector", sign_args.selector, "Selector (s=)")
      ->required();
  sign->add_option("--canonicalization", sign_args.canonicalization,
                   "HEADER/BODY: simple or relaxed (default relaxed/relaxed)");
  sign->add_option("--time", sign_args.time,
                   "Signature time, Unix seconds (default now)");

  SendTestArgs send_test;
  CLI::App* send_test_cmd = app.add_subcommand(
      "send-test",
      "Send a test message as an application would, and follow it to its "
      "outcome (exit 0: delivered)");
  send_test_cmd->add_option("--to", send_test.to, "Recipient")->required();
  send_test_cmd->add_option("--from", send_test.from, "Sender");
  send_test_cmd->add_option("--server", send_test.server,
                            "HOST:PORT (default: the local daemon)");
  send_test_cmd->add_option("--tls", send_test.tls,
                            "starttls, implicit or none (default: by port)");
  send_test_cmd->add_option(
      "--user", send_test.user,
      "AUTH as (password: PEREGRINE_PASSWORD or standard input)");
  send_test_cmd->add_option("-c,--config", send_test.config_path,
                            "TOML configuration file");
  send_test_cmd->add_option("--data-dir", send_test.data_dir, "Data directory");
  send_test_cmd->add_option("--timeout", send_test.timeout_s,
                            "Seconds to follow it (60)");

  DnsRecordsArgs records;
  CLI::App* records_cmd = app.add_subcommand(
      "dns-records", "The DNS records to publish for a domain, as zone lines");
  records_cmd->add_option("--domain", records.domain, "The domain")->required();
  records_cmd->add_option("-c,--config", records.config_path,
                          "TOML configuration file");
  records_cmd->add_option("--ip", records.addresses,
                          "Egress address (default: [[delivery.sources]], "
                          "else this host's)");
  records_cmd->add_option("--reports", records.report_address,
                          "Where DMARC and TLS reports go (postmaster@D)");

  QueueArgs queue_args;
  CLI::App* queue_cmd = app.add_subcommand(
      "queue",
      "Inspect the queue (a read-only view while the daemon runs); hold "
      "and release sites through the running daemon");
  queue_cmd->require_subcommand(1);
  for (CLI::App* sub :
       {queue_cmd->add_subcommand("stats", "Counts by state and domain"),
        queue_cmd->add_subcommand("list", "Messages and their recipients"),
        queue_cmd->add_subcommand("show", "One message")}) {
    sub->add_option("-c,--config", queue_args.config_path,
                    "TOML configuration file");
    sub->add_option("--data-dir", queue_args.data_dir, "Data directory");
  }
  CLI::App* queue_list = queue_cmd->get_subcommand("list");
  queue_list->add_option("--state", queue_args.state, "queued, deferred, ...");
  queue_list->add_option("--domain", queue_args.domain, "Recipient domain");
  queue_list->add_option("--sender", queue_args.sender, "Part of the sender");
  queue_list->add_option("--limit", queue_args.limit,
                         "At most this many (100)");
  QueueControlArgs control;
  AddQueueControl(*queue_cmd, control);
  CLI::App* queue_show = queue_cmd->get_subcommand("show");
  queue_show->add_option("id", queue_args.id, "Queue id")->required();
  queue_show->add_flag("--body", queue_args.body, "Print the message too");

  UserArgs user_args;
  CLI::App* user_cmd =
      app.add_subcommand("user", "Accounts that may AUTH on submission");
  user_cmd->require_subcommand(1);
  for (const char* what : {"add", "del", "list", "check", "senders", "rate"}) {
    const std::string w = what;
    CLI::App* sub = user_cmd->add_subcommand(
        what, w == "add"       ? "Add a user or set a password"
              : w == "del"     ? "Remove a user"
              : w == "list"    ? "List the users"
              : w == "senders" ? "The addresses (a@x.com) and domains "
                                 "(@x.com) a user may send as; none: any"
              : w == "rate"    ? "How many messages a user may send: 100/h; "
                                 "unlimited"
                               : "Check a user's password");
    sub->add_option("-c,--config", user_args.config_path,
                    "TOML configuration file");
    sub->add_option("--data-dir", user_args.data_dir, "Data directory");
    sub->add_option("--users-file", user_args.users_file,
                    "The users file itself");
    if (w != "list") {
      sub->add_option("name", user_args.name, "User name")->required();
    }
    if (w == "senders") {
      sub->add_option("senders", user_args.senders,
                      "app@example.com, @example.com ...");
    }
    if (w == "rate") {
      sub->add_option("rate", user_args.rate, "100/h, 10/m, or unlimited")
          ->required();
    }
  }

  CLI::App* bounce_cmd =
      app.add_subcommand("bounce", "How failures are classified and read");
  bounce_cmd->require_subcommand(1);
  BounceArgs bounce_args;
  CLI::App* classify = bounce_cmd->add_subcommand(
      "classify",
      "The category of a reply, e.g. peregrine bounce classify \"550 5.1.1 "
      "no such user\", and the rule that matched");
  classify->add_option("reply", bounce_args.reply, "The reply, quoted")
      ->required();
  classify->add_option("--rules", bounce_args.rules,
                       "A rule file tried before the built-in rules");
  classify->add_option("-c,--config", bounce_args.config,
                       "Use this configuration's bounce.rules_file");
  CLI::App* rules_cmd = bounce_cmd->add_subcommand(
      "rules", "Print the built-in classification rules (TOML)");
  BounceParseArgs parse_args;
  CLI::App* parse_cmd = bounce_cmd->add_subcommand(
      "parse",
      "What Peregrine reads from a bounce or feedback report (JSON): each "
      "failed recipient, status, reply, category, and the VERP match");
  parse_cmd->add_option("file", parse_args.file, "The message, or - (stdin)")
      ->required();
  parse_cmd->add_option("-c,--config", parse_args.config_path,
                        "Configuration (rules file, VERP domain and key)");
  parse_cmd->add_option("--data-dir", parse_args.data_dir,
                        "Data directory (where verp.secret is)");
  parse_cmd->add_option("--rules", parse_args.rules,
                        "A rule file tried before the built-in rules");
  parse_cmd->add_option("--rcpt", parse_args.recipient,
                        "The envelope recipient it came to");

  AliasArgs alias_args;
  AddAliasCommands(app, alias_args);

  doctor::DoctorArgs doc;
  CLI::App* doctor_cmd = app.add_subcommand(
      "doctor",
      "Check DNS, reverse DNS, SPF, DKIM, DMARC, MX, certificate, "
      "port 25, listeners and open relay; say how to fix each");
  doctor_cmd->add_option("--domain", doc.domains, "A sending domain (repeat)");
  doctor_cmd->add_option("--ip", doc.addresses, "An egress address (repeat)");
  doctor_cmd->add_flag("--json", doc.json, "Findings as JSON");
  doctor_cmd->add_option("--port25", doc.port25,
                         "Domain or HOST:PORT for the port-25 test; none");
  doctor_cmd->add_option("--port25-timeout", doc.port25_timeout_s,
                         "Seconds before port 25 counts as blocked (10)");
  doctor_cmd->add_option("-c,--config", doc.config_path, "Configuration");
  doctor_cmd->add_option("--data-dir", doc.data_dir, "Data directory");

  SuppressionArgs sup;
  CLI::App* sup_cmd = app.add_subcommand(
      "suppression",
      "Addresses no longer mailed (works while the daemon runs)");
  sup_cmd->require_subcommand(1);
  const char* sup_commands[] = {"list", "export", "add", "remove", "import"};
  for (const char* what : sup_commands) {
    std::string w = what;
    CLI::App* sub = sup_cmd->add_subcommand(
        what, w == "list"     ? "Print the list"
              : w == "export" ? "Print the list as CSV"
              : w == "add"    ? "Suppress an address"
              : w == "remove" ? "Mail an address again"
                              : "Add every address of a CSV file (- : stdin)");
    sub->add_option("-c,--config", sup.config_path, "TOML configuration file");
    sub->add_option("--data-dir", sup.data_dir, "Data directory");
    sub->add_option("--scope", sup.scope,
                    "\"\" (global), tenant:NAME or campaign:NAME");
    if (w == "add" || w == "remove") {
      sub->add_option("address", sup.address, "The address")->required();
    }
    if (w == "add") {
      sub->add_option("--reason", sup.reason, "Why, in words");
      sub->add_option("--category", sup.category,
                      "A category name, complaint or manual (the default)");
      sub->add_option("--expires", sup.expires,
                      "When it stops counting (2027-01-01); default never");
    }
    if (w == "import") {
      sub->add_option("file", sup.file,
                      "address[,scope,category,reason,source,added,expires] "
                      "lines")
          ->required();
    }
  }

  // "help", no command and an unknown command, said plainly (CLI11 alone
  // answers "A subcommand is required" to all three).
  std::vector<std::string> commands;
  for (const CLI::App* sub : app.get_subcommands({})) {
    commands.push_back(sub->get_name());
  }
  auto known = [&](absl::string_view name) {
    return std::find(commands.begin(), commands.end(), name) != commands.end();
  };
  std::string list = absl::StrJoin(commands, ", ");
  std::string first = argc >= 2 ? argv[1] : "";
  if (first == "help") {
    if (argc == 2) {
      out << app.help();
      return 0;
    }
    if (!known(argv[2])) {
      err << "peregrine help: no command '" << argv[2]
          << "'; the commands are: " << list << "\n";
      return kExitUsage;
    }
    out << app.get_subcommand(argv[2])->help();
    return 0;
  }
  if (argc < 2) {
    err << "peregrine: say what to do: " << list
        << " (peregrine help COMMAND tells more; peregrine serve runs the "
           "MTA)\n";
    return kExitUsage;
  }
  if (!first.empty() && first[0] != '-' && !known(first)) {
    err << "peregrine: unknown command '" << first
        << "'; the commands are: " << list
        << " (peregrine help COMMAND tells more)\n";
    return kExitUsage;
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e, out, err);
    return rc == 0 ? 0 : kExitUsage;
  }

  if (*serve) return Serve(config_path, data_dir, run_as, err);
  if (*records_cmd) return DnsRecordsCommand(records, out, err);
  if (*doctor_cmd) return doctor::DoctorCommand(doc, out, err);
  if (*send_test_cmd) return SendTest(send_test, std::cin, out, err);
  if (*check) return ConfigCheck(check_path, out, err);
  if (*keygen) return DkimKeygen(keygen_args, out, err);
  for (const char* what : {"add", "del", "list", "check", "senders", "rate"}) {
    if (*user_cmd->get_subcommand(what)) {
      return UserCommand(what, user_args, out, err);
    }
  }
  for (const char* what : {"stats", "list", "show"}) {
    if (*queue_cmd->get_subcommand(what)) {
      return QueueCommand(what, queue_args, out, err);
    }
  }
  for (const char* what : {"suspend", "resume", "suspensions", "summary",
                           "retry", "bounce", "delete", "transfer"}) {
    if (*queue_cmd->get_subcommand(what)) {
      return QueueControl(what, control, out, err);
    }
  }
  for (const char* what : {"add", "del", "list", "resolve"}) {
    if (*app.get_subcommand("alias")->get_subcommand(what)) {
      return AliasCommand(what, alias_args, out, err);
    }
  }
  for (const char* what : sup_commands) {
    if (*sup_cmd->get_subcommand(what)) {
      return SuppressionCommand(what, sup, std::cin, out, err);
    }
  }
  if (*sign) return DkimSign(sign_args, std::cin, out, err);
  if (*classify) return BounceClassify(bounce_args, out, err);
  if (*parse_cmd) return BounceParse(parse_args, std::cin, out, err);
  if (*rules_cmd) {
    out << bounce::DefaultRules();
    return 0;
  }
  if (*defaults) {
    out << DefaultConfigToml();
    return 0;
  }
  return kExitUsage;
}

}  // namespace peregrine
