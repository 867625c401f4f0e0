#include "mta/sendmail.h"

#include <gmime/gmime.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <iterator>
#include <mutex>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "mta/blocking_smtp.h"
#include "mta/config.h"

namespace peregrine {
namespace {

// sysexits(3).
constexpr int kOk = 0;
constexpr int kUsage = 64;
constexpr int kDataErr = 65;
constexpr int kNoUser = 67;
constexpr int kUnavailable = 69;
constexpr int kTempFail = 75;
constexpr int kConfig = 78;

constexpr size_t kMaxInput = 64 << 20;  // Past this: EX_DATAERR.

void InitGmime() {
  static std::once_flag once;
  std::call_once(once, [] { g_mime_init(); });
}

// Header lines, unfolded: (name, value) in order, and where the body
// starts in `lines`.
struct Header {
  std::string name;
  std::string raw;  // The field as it was, continuation lines included.
  std::string value;
};

// Addresses of a header value (To, Cc, Bcc), groups' members included.
void AddAddresses(const std::string& value, std::vector<std::string>* out) {
  InitGmime();
  InternetAddressList* list =
      internet_address_list_parse(nullptr, value.c_str());
  if (list == nullptr) return;
  std::vector<InternetAddressList*> todo = {list};
  while (!todo.empty()) {
    InternetAddressList* l = todo.back();
    todo.pop_back();
    for (int i = 0; i < internet_address_list_length(l); ++i) {
      InternetAddress* a = internet_address_list_get_address(l, i);
      if (INTERNET_ADDRESS_IS_MAILBOX(a)) {
        const char* addr =
            internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(a));
        if (addr != nullptr && std::strchr(addr, '@') != nullptr) {
          out->push_back(addr);
        }
      } else if (INTERNET_ADDRESS_IS_GROUP(a)) {
        todo.push_back(
            internet_address_group_get_members(INTERNET_ADDRESS_GROUP(a)));
      }
    }
  }
  g_object_unref(list);
}

std::string UserName() {
  const char* env = getenv("USER");
  if (passwd* pw = getpwuid(getuid()); pw != nullptr && pw->pw_name) {
    return pw->pw_name;
  }
  return env != nullptr && *env ? env : "root";
}

}  // namespace

namespace {

// An address as the envelope carries it: no control characters, spaces or
// angle brackets (they would end or split the SMTP command).
bool EnvelopeSafe(absl::string_view address) {
  for (char c : address) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f || c == '<' ||
        c == '>') {
      return false;
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<SendmailArgs> ParseSendmailArgs(
    const std::vector<std::string>& args) {
  SendmailArgs a;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    auto value = [&](absl::string_view flag) -> absl::StatusOr<std::string> {
      if (arg.size() > flag.size()) return arg.substr(flag.size());
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat(flag, " needs a value"));
      }
      return args[++i];
    };
    if (arg == "--") {
      a.recipients.insert(a.recipients.end(), args.begin() + i + 1, args.end());
      break;
    }
    if (arg.empty() || arg[0] != '-') {
      a.recipients.push_back(arg);
      continue;
    }
    if (arg == "-t") {
      a.extract = true;
    } else if (arg == "-i" || arg == "-oi") {
      a.dot_ends = false;
    } else if (absl::StartsWith(arg, "-f") || absl::StartsWith(arg, "-r")) {
      auto v = value(arg.substr(0, 2));
      if (!v.ok()) return v.status();
      a.sender = *v;
      a.sender_given = true;
      // "<>" and "<a@b>" as well as a@b.
      if (absl::StartsWith(a.sender, "<") && absl::EndsWith(a.sender, ">")) {
        a.sender = a.sender.substr(1, a.sender.size() - 2);
      }
    } else if (absl::StartsWith(arg, "-F")) {
      auto v = value("-F");
      if (!v.ok()) return v.status();
      a.full_name = *v;
    } else if (arg == "--config" || absl::StartsWith(arg, "-C")) {
      auto v = value(arg == "--config" ? "--config" : "-C");
      if (!v.ok()) return v.status();
      a.config_path = *v;
    } else if (arg == "--data-dir") {
      auto v = value("--data-dir");
      if (!v.ok()) return v.status();
      a.data_dir = *v;
    } else if (arg == "-bs") {
      return absl::InvalidArgumentError(
          "-bs (SMTP on standard input) is not served: speak SMTP to "
          "listen.relay instead");
    } else if (arg == "-bp" || arg == "-q" || absl::StartsWith(arg, "-q")) {
      return absl::InvalidArgumentError(
          absl::StrCat(arg, ": the queue is `peregrine queue stats|list`"));
    } else if (absl::StartsWith(arg, "-o") || arg == "-v" || arg == "-bm" ||
               arg == "-U" || arg == "-n" || arg == "-m" ||
               absl::StartsWith(arg, "-e")) {
      // Accepted and ignored, as Postfix does.
    } else if (arg.size() >= 2 && absl::StrContains("hNRVBXL", arg[1])) {
      auto v = value(arg.substr(0, 2));  // Takes a value; ignored.
      if (!v.ok()) return v.status();
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown flag ", arg,
          " (taken: -t -i -oi -f ADDR -r ADDR -F NAME -C FILE, recipients)"));
    }
  }
  if (!EnvelopeSafe(a.sender)) {
    return absl::InvalidArgumentError(
        "-f: the sender holds a space, a control character or <>");
  }
  for (const std::string& r : a.recipients) {
    if (r.empty() || !EnvelopeSafe(r)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "\"", absl::CHexEscape(r),
          "\" is not an address (a space, a control character or <>)"));
    }
  }
  // The From header's name: one line, its quotes escaped.
  std::string name;
  for (char c : a.full_name) {
    if (static_cast<unsigned char>(c) < ' ' || c == 0x7f) c = ' ';
    if (c == '"' || c == '\\') name += '\\';
    name += c;
  }
  a.full_name = std::move(name);
  return a;
}

absl::StatusOr<PreparedMail> PrepareMail(const std::string& input,
                                         const SendmailArgs& args,
                                         const std::string& sender,
                                         const std::string& hostname,
                                         absl::Time now) {
  // Lines, without their ends: CRLF, LF, and a CR alone too (SMTP allows
  // CR and LF only together: a bare one is taken as a line end).
  std::string normal = absl::StrReplaceAll(input, {{"\r\n", "\n"}});
  std::replace(normal.begin(), normal.end(), '\r', '\n');
  if (absl::EndsWith(normal, "\n")) normal.pop_back();  // The last line's end.
  std::vector<std::string> lines;
  if (!normal.empty()) {
    for (absl::string_view line : absl::StrSplit(normal, '\n')) {
      if (args.dot_ends && line == ".") break;
      lines.emplace_back(line);
    }
  }
  // The header: up to the first empty line (or a line that is no field).
  std::vector<Header> headers;
  size_t body = 0;
  for (; body < lines.size(); ++body) {
    const std::string& line = lines[body];
    if (line.empty()) {
      ++body;
      break;
    }
    if ((line[0] == ' ' || line[0] == '\t') && !headers.empty()) {
      absl::StrAppend(&headers.back().raw, "\r\n", line);
      absl::StrAppend(&headers.back().value, " ",
                      absl::StripLeadingAsciiWhitespace(line));
      continue;
    }
    // A field name is printable ASCII but the colon (RFC 5322 2.2), and
    // the obsolete syntax allows blanks before the colon (4.5.3).
    size_t name_end = 0;
    while (name_end < line.size() && line[name_end] > ' ' &&
           line[name_end] < 0x7f && line[name_end] != ':') {
      ++name_end;
    }
    size_t colon = name_end;
    while (colon < line.size() && (line[colon] == ' ' || line[colon] == '\t')) {
      ++colon;
    }
    if (name_end == 0 || colon >= line.size() || line[colon] != ':') {
      break;  // Not a header field: the body starts here.
    }
    headers.push_back(
        {line.substr(0, name_end), line,
         std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)))});
  }
  PreparedMail out;
  out.recipients = args.recipients;
  auto has = [&headers](absl::string_view name) {
    for (const Header& h : headers) {
      if (absl::EqualsIgnoreCase(h.name, name)) return true;
    }
    return false;
  };
  if (args.extract) {
    for (const Header& h : headers) {
      if (absl::EqualsIgnoreCase(h.name, "To") ||
          absl::EqualsIgnoreCase(h.name, "Cc") ||
          absl::EqualsIgnoreCase(h.name, "Bcc")) {
        AddAddresses(h.value, &out.recipients);
      }
    }
  }
  if (out.recipients.empty()) {
    return absl::InvalidArgumentError(
        args.extract ? "no recipients: the message has no To, Cc or Bcc "
                       "address, and none was given"
                     : "no recipients: name them as arguments, or use -t to "
                       "read them from the To, Cc and Bcc headers");
  }
  std::string text;
  if (!has("From")) {
    absl::StrAppend(&text, "From: ",
                    args.full_name.empty() ? sender
                                           : absl::StrCat("\"", args.full_name,
                                                          "\" <", sender, ">"),
                    "\r\n");
  }
  if (!has("Date")) {
    absl::StrAppend(&text, "Date: ",
                    absl::FormatTime("%a, %d %b %Y %H:%M:%S %z", now,
                                     absl::LocalTimeZone()),
                    "\r\n");
  }
  if (!has("Message-ID")) {
    std::random_device random;
    absl::StrAppendFormat(&text, "Message-ID: <%d.%08x%08x@%s>\r\n",
                          absl::ToUnixSeconds(now), random(), random(),
                          hostname);
  }
  for (const Header& h : headers) {
    // Bcc is for the envelope only (with -t, as sendmail; without it the
    // header stays as the caller wrote it).
    if (args.extract && absl::EqualsIgnoreCase(h.name, "Bcc")) continue;
    absl::StrAppend(&text, h.raw, "\r\n");
  }
  text += "\r\n";
  for (size_t i = body; i < lines.size(); ++i) {
    absl::StrAppend(&text, lines[i], "\r\n");
  }
  out.message = std::move(text);
  return out;
}

constexpr char kSystemConfig[] = "/etc/peregrine/peregrine.toml";

int Sendmail(const std::vector<std::string>& raw_args, std::istream& in,
             std::ostream& out, std::ostream& err) {
  const char* kName = "sendmail";
  auto args = ParseSendmailArgs(raw_args);
  if (!args.ok()) {
    err << kName << ": " << args.status().message() << "\n";
    return kUsage;
  }
  // Cron and mail() name no configuration: PEREGRINE_CONFIG, else the
  // system's (where deploy/ installs it), else the built-in defaults.
  std::string path = args->config_path;
  if (path.empty()) {
    const char* env = getenv("PEREGRINE_CONFIG");
    if (env != nullptr && *env != '\0') {
      path = env;
    } else if (access(kSystemConfig, F_OK) == 0) {
      path = kSystemConfig;
    }
  }
  absl::StatusOr<Config> config =
      path.empty() ? DefaultConfig() : LoadConfigFile(path);
  if (!config.ok()) {
    err << kName << ": " << config.status().message()
        << (args->config_path.empty()
                ? " (sendmail reads it for the relay port; let this user "
                  "read it, or name another with -C or PEREGRINE_CONFIG)"
                : "")
        << "\n";
    return kConfig;
  }
  auto address = ListenerAddress(*config, ListenerKind::kRelay);
  if (!address.ok()) {
    err << kName << ": " << address.status().message()
        << ": sendmail submits through it (from loopback, a trusted "
           "network)\n";
    return kConfig;
  }
  std::string input;
  char buf[65536];
  while (in.read(buf, sizeof(buf)) || in.gcount() > 0) {
    input.append(buf, static_cast<size_t>(in.gcount()));
    if (input.size() > kMaxInput) {
      err << kName << ": the message is over 64 MiB\n";
      return kDataErr;
    }
  }
  const std::string hostname = config->EffectiveHostname();
  std::string sender = args->sender_given
                           ? args->sender
                           : absl::StrCat(UserName(), "@", hostname);
  auto mail = PrepareMail(input, *args, sender, hostname, absl::Now());
  if (!mail.ok()) {
    err << kName << ": " << mail.status().message() << "\n";
    return kDataErr;
  }
  BlockingSmtp c;
  if (absl::Status s = c.Connect(*address); !s.ok()) {
    err << kName << ": "
        << (absl::StrContains(s.message(), "refused")
                ? "the daemon is not running: nothing answers"
                : absl::StrCat("cannot connect (", s.message(), ")"))
        << " on " << address->ToString()
        << " (listen.relay); start it (`peregrine serve`), then send again\n";
    return kTempFail;
  }
  std::string reply;
  // Each step: what was sent and the reply, or the exit code on failure.
  auto step = [&](const std::string& command, int want,
                  const std::string& what) -> int {
    if (!command.empty() && !c.Send(command)) {
      err << kName << ": the daemon closed the connection (" << what
          << "); send again\n";
      return kTempFail;
    }
    int code = c.Reply(&reply);
    if (code == want) return kOk;
    if (code == 0) {
      err << kName << ": no answer from the daemon (" << what
          << "); send again\n";
      return kTempFail;
    }
    err << kName << ": " << what << ": " << reply << "\n";
    return code >= 500 ? kUnavailable : kTempFail;
  };
  if (int rc = step("", 220, "greeting"); rc != kOk) return rc;
  if (int rc = step(absl::StrCat("EHLO ", hostname, "\r\n"), 250, "EHLO");
      rc != kOk) {
    return rc;
  }
  if (int rc = step(absl::StrCat("MAIL FROM:<", sender, ">\r\n"), 250,
                    absl::StrCat("sender <", sender, ">"));
      rc != kOk) {
    return rc;
  }
  size_t accepted = 0;
  int refused_rc = kOk;
  for (const std::string& r : mail->recipients) {
    int rc = step(absl::StrCat("RCPT TO:<", r, ">\r\n"), 250,
                  absl::StrCat("recipient <", r, ">"));
    if (rc == kOk) {
      ++accepted;
    } else {
      refused_rc = rc == kUnavailable ? kNoUser : rc;
    }
  }
  if (accepted == 0) {
    (void)c.Send("QUIT\r\n");
    return refused_rc;
  }
  if (int rc = step("DATA\r\n", 354, "DATA"); rc != kOk) return rc;
  if (int rc = step(DotStuffed(mail->message), 250, "the message"); rc != kOk) {
    return rc;
  }
  (void)c.Send("QUIT\r\n");
  if (refused_rc != kOk) {
    err << kName << ": sent to the other " << accepted << " recipients\n";
    return refused_rc;
  }
  (void)out;
  return kOk;
}

}  // namespace peregrine
