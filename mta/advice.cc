#include "mta/advice.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"

namespace peregrine {

std::string Advice(absl::string_view reply) {
  std::string r = absl::AsciiStrToLower(reply);
  auto has = [&r](absl::string_view s) { return absl::StrContains(r, s); };
  if (has("timed out") && (has("connect") || has(":25"))) {
    return "port 25 seems blocked on the way out: many VPS providers block "
           "it; ask yours to open it, or relay through [smarthost]";
  }
  if (has("connection refused")) {
    return "nothing listens there: check the host and port (and for a "
           "smarthost, smarthost.port)";
  }
  if (absl::StartsWith(r, "535") || has("authentication failed") ||
      has("refused the login")) {
    return "wrong user name or password; Gmail and Office 365 want an app "
           "password, not the account's own";
  }
  if (has("wrong version number") || has("sent no greeting") ||
      has("plain smtp first")) {
    return "the TLS mode does not fit the port: implicit TLS for 465, "
           "STARTTLS for 587";
  }
  if (absl::StartsWith(r, "552") || has("5.3.4") || has("too large") ||
      has("size exceeds")) {
    return "the message is larger than the receiver takes: send less, or a "
           "link instead of the attachment";
  }
  if (has("spf") || has("dkim") || has("dmarc") || has("5.7.23") ||
      has("5.7.25") || has("5.7.26") || has("5.7.27") || has("ptr") ||
      has("reverse dns")) {
    return "the receiver distrusts the sending IP or domain: publish what "
           "`peregrine dns-records --domain YOURDOMAIN` prints, set the IP's "
           "PTR to server.hostname";
  }
  if (has("5.1.1") || has("user unknown") || has("no such user") ||
      has("does not exist")) {
    return "the address does not exist at the destination: check its "
           "spelling";
  }
  if (has("5.7.1") && (has("relay") || has("not allowed"))) {
    return "refused by policy: relaying needs AUTH on submission (or a "
           "client in relay.trusted_networks), and a user may send only as "
           "its `peregrine user senders`";
  }
  if (absl::StartsWith(r, "4") &&
      (has("greylist") || has("try again") || has("rate") || has("too many") ||
       has("throttl"))) {
    return "the receiver asks to come back later (greylisting or a rate "
           "limit); Peregrine retries by itself";
  }
  if (has("certificate")) {
    return "the receiver's certificate does not check out for a tls = "
           "\"verify\" site";
  }
  if (has("servfail") || has("dns") || has("nxdomain") || has("no mx")) {
    return "the recipient domain does not resolve as mail needs: check its "
           "MX (dig MX DOMAIN) and this host's resolver";
  }
  return "";
}

}  // namespace peregrine
