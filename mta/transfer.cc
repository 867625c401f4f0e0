#include "mta/transfer.h"

#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "mta/transfer_header.h"

namespace peregrine {

absl::Status Transferor::Open() {
  smtp_ = std::make_unique<BlockingSmtp>();
  size_t colon = to_.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    smtp_.reset();
    return absl::InvalidArgumentError(
        absl::StrCat("\"", to_, "\": expected HOST:PORT"));
  }
  absl::string_view host = absl::string_view(to_).substr(0, colon);
  absl::ConsumePrefix(&host, "[");
  absl::ConsumeSuffix(&host, "]");
  absl::Status s = smtp_->Connect(std::string(host), to_.substr(colon + 1), 60);
  if (!s.ok()) {
    smtp_.reset();
    return absl::UnavailableError(
        absl::StrCat("cannot connect to ", to_, ": ", s.message()));
  }
  std::string text;
  if (int code = smtp_->Reply(&text); code != 220) {
    smtp_.reset();
    return absl::UnavailableError(
        absl::StrCat(to_, " greeted with ", code, " ", text));
  }
  auto ehlo = Step(absl::StrCat("EHLO ", helo_), "EHLO");
  if (!ehlo.ok()) return ehlo.status();
  std::string upper = absl::AsciiStrToUpper(*ehlo);
  dsn_ = absl::StrContains(upper, "DSN");
  eight_bit_ = absl::StrContains(upper, "8BITMIME");
  utf8_ = absl::StrContains(upper, "SMTPUTF8");
  return absl::OkStatus();
}

absl::StatusOr<std::string> Transferor::Step(const std::string& command,
                                             const char* what) {
  std::string text;
  int code = smtp_->Send(command + "\r\n") ? smtp_->Reply(&text) : 0;
  if (code < 200 || code >= 400) {
    smtp_.reset();
    return absl::UnavailableError(
        absl::StrCat(to_, " answered ", what, " with ",
                     code == 0 ? std::string("nothing (the connection broke)")
                               : absl::StrCat(code, " ", text)));
  }
  return absl::StrCat(code, " ", text);
}

absl::StatusOr<Relayed> Transferor::Relay(
    const queue::StoredMessage& m,
    const std::vector<queue::RecipientRecord>& recipients) {
  if (smtp_ == nullptr) {
    if (absl::Status s = Open(); !s.ok()) return s;
  } else if (auto r = Step("RSET", "RSET"); !r.ok()) {
    if (absl::Status s = Open(); !s.ok()) return s;
  }
  bool eight_bit = false;
  for (char c : m.body) eight_bit |= static_cast<unsigned char>(c) >= 0x80;
  bool utf8 = false;
  for (char c : m.envelope.sender)
    utf8 |= static_cast<unsigned char>(c) >= 0x80;
  for (const auto& r : recipients) {
    for (char c : r.spec.address) utf8 |= static_cast<unsigned char>(c) >= 0x80;
  }
  Relayed relayed;
  std::string mail = absl::StrCat("MAIL FROM:<", m.envelope.sender, ">");
  if (eight_bit && eight_bit_) absl::StrAppend(&mail, " BODY=8BITMIME");
  if (utf8 && utf8_) absl::StrAppend(&mail, " SMTPUTF8");
  if (dsn_ && m.envelope.ret != queue::DsnRet::kUnspecified) {
    absl::StrAppend(&mail, m.envelope.ret == queue::DsnRet::kFull
                               ? " RET=FULL"
                               : " RET=HDRS");
  }
  if (dsn_ && !m.envelope.envid.empty()) {
    absl::StrAppend(&mail, " ENVID=", m.envelope.envid);
  }
  if (auto r = Step(mail, "MAIL"); !r.ok()) return r.status();
  for (const queue::RecipientRecord& r : recipients) {
    std::string rcpt = absl::StrCat("RCPT TO:<", r.spec.address, ">");
    uint8_t n = r.spec.notify;
    if (dsn_ && n != queue::kNotifyDefault) {
      std::vector<std::string> words;
      if (n & queue::kNotifyNever) words.push_back("NEVER");
      if (n & queue::kNotifySuccess) words.push_back("SUCCESS");
      if (n & queue::kNotifyFailure) words.push_back("FAILURE");
      if (n & queue::kNotifyDelay) words.push_back("DELAY");
      absl::StrAppend(&rcpt, " NOTIFY=", absl::StrJoin(words, ","));
    }
    if (dsn_ && !r.spec.orcpt.empty()) {
      absl::StrAppend(&rcpt, " ORCPT=", r.spec.orcpt);
    }
    std::string text;
    int code = smtp_->Send(rcpt + "\r\n") ? smtp_->Reply(&text) : 0;
    if (code == 0) {
      smtp_.reset();
      return absl::UnavailableError(
          absl::StrCat(to_,
                       " answered RCPT with nothing (the connection "
                       "broke)"));
    }
    if (code / 100 == 2) {
      relayed.accepted.push_back(r.index);
    } else {
      relayed.refused.push_back(
          absl::StrCat(r.spec.address, ": ", code, " ", text));
    }
  }
  if (relayed.accepted.empty()) {
    (void)Step("RSET", "RSET");
    return absl::FailedPreconditionError(absl::StrCat(
        to_,
        " refused every recipient: ", absl::StrJoin(relayed.refused, "; ")));
  }
  if (auto r = Step("DATA", "DATA"); !r.ok()) return r.status();
  TransferInfo info;
  info.tenant = m.envelope.tenant;
  info.campaign = m.envelope.campaign;
  info.attempts = recipients.empty() ? 0 : recipients[0].attempts;
  info.received = m.envelope.received;
  info.node = node_;
  std::string data = DotStuffed(TransferHeader(info) + m.body);
  data.resize(data.size() - 2);  // Step() ends the "." line.
  auto reply = Step(data, "the message");
  if (!reply.ok()) return reply.status();
  relayed.reply = *std::move(reply);
  return relayed;
}

}  // namespace peregrine
