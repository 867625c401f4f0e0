#include "queue/codec.h"

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"

namespace peregrine::queue {

std::string FormatMessageId(MessageId id) {
  return absl::StrFormat("%016X", id);
}

bool ParseMessageId(absl::string_view text, MessageId* id) {
  if (text.empty() || text.size() > 16) return false;
  return absl::SimpleHexAtoi(text, id);
}

absl::string_view StateName(RecipientState s) {
  switch (s) {
    case RecipientState::kQueued:
      return "queued";
    case RecipientState::kDeferred:
      return "deferred";
    case RecipientState::kDelivered:
      return "delivered";
    case RecipientState::kFailed:
      return "failed";
    case RecipientState::kExpired:
      return "expired";
  }
  return "unknown";
}

bool ParseStateName(absl::string_view text, RecipientState* s) {
  for (int i = 0; i <= 4; ++i) {
    if (StateName(static_cast<RecipientState>(i)) == text) {
      *s = static_cast<RecipientState>(i);
      return true;
    }
  }
  return false;
}

absl::string_view RecipientRecord::domain() const {
  absl::string_view a = spec.address;
  size_t at = a.rfind('@');
  return at == absl::string_view::npos ? absl::string_view() : a.substr(at + 1);
}

int AgeBucket(absl::Duration age) {
  int64_t minutes = absl::ToInt64Minutes(age);
  int b = 0;
  while (b + 1 < kAgeBuckets && minutes >= kAgeBucketStart[b + 1]) ++b;
  return b;
}

bool ListFilter::MatchesMessage(MessageId message,
                                const Envelope& envelope) const {
  if (id != 0 && message != id) return false;
  if (message <= after) return false;
  if (!campaign.empty() && envelope.campaign != campaign) return false;
  if (!tenant.empty() && envelope.tenant != tenant) return false;
  return sender.empty() ||
         absl::StrContains(absl::AsciiStrToLower(envelope.sender),
                           absl::AsciiStrToLower(sender));
}

bool ListFilter::MatchesRecipient(const RecipientRecord& r) const {
  if (has_state && r.state != state) return false;
  if (pending && IsFinal(r.state)) return false;
  if (!domain.empty() && !absl::EqualsIgnoreCase(r.domain(), domain)) {
    return false;
  }
  return site.empty() || r.spec.site == site;
}

namespace codec {
namespace {

constexpr char kVersion = 1;

void PutBig(std::string* out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i)
    out->push_back(static_cast<char>(v >> (8 * i)));
}

uint64_t GetBig(absl::string_view in, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<uint8_t>(in[i]);
  return v;
}

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

void PutStr(std::string* out, absl::string_view s) {
  PutVarint(out, s.size());
  out->append(s.data(), s.size());
}

void PutTime(std::string* out, absl::Time t) {
  int64_t us = absl::ToUnixMicros(t);
  PutVarint(out, us < 0 ? 0 : static_cast<uint64_t>(us));
}

// Reads from the front of a value; any overrun makes ok() false for good.
class Reader {
 public:
  explicit Reader(absl::string_view in) : in_(in) {}
  bool ok() const { return ok_; }
  bool done() const { return in_.empty(); }

  uint64_t Varint() {
    uint64_t v = 0;
    for (int shift = 0; shift <= 63; shift += 7) {
      if (in_.empty()) return Fail();
      uint8_t b = static_cast<uint8_t>(in_.front());
      in_.remove_prefix(1);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    return Fail();
  }
  std::string Str() {
    uint64_t n = Varint();
    if (!ok_ || n > in_.size()) {
      Fail();
      return "";
    }
    std::string s(in_.substr(0, n));
    in_.remove_prefix(n);
    return s;
  }
  absl::Time Time() {
    return absl::FromUnixMicros(static_cast<int64_t>(Varint()));
  }
  uint8_t Byte() {
    if (in_.empty()) return static_cast<uint8_t>(Fail());
    uint8_t b = static_cast<uint8_t>(in_.front());
    in_.remove_prefix(1);
    return b;
  }

 private:
  uint64_t Fail() {
    ok_ = false;
    in_ = {};
    return 0;
  }
  absl::string_view in_;
  bool ok_ = true;
};

}  // namespace

std::string MessageKey(MessageId id) {
  std::string k;
  PutBig(&k, id, 8);
  return k;
}

std::string RecipientKey(MessageId id, uint32_t index) {
  std::string k;
  k.reserve(12);
  PutBig(&k, id, 8);
  PutBig(&k, index, 4);
  return k;
}

std::string ScheduleSeek(uint16_t shard, absl::Time when) {
  std::string k;
  k.reserve(22);
  PutBig(&k, shard, 2);
  int64_t us = absl::ToUnixMicros(when);
  PutBig(&k, us < 0 ? 0 : static_cast<uint64_t>(us), 8);
  return k;
}

std::string ScheduleKey(uint16_t shard, absl::Time when, MessageId id,
                        uint32_t index) {
  std::string k = ScheduleSeek(shard, when);
  PutBig(&k, id, 8);
  PutBig(&k, index, 4);
  return k;
}

bool ParseMessageKey(absl::string_view key, MessageId* id) {
  if (key.size() != 8) return false;
  *id = GetBig(key, 8);
  return true;
}

bool ParseRecipientKey(absl::string_view key, MessageId* id, uint32_t* index) {
  if (key.size() != 12) return false;
  *id = GetBig(key, 8);
  *index = static_cast<uint32_t>(GetBig(key.substr(8), 4));
  return true;
}

bool ParseScheduleKey(absl::string_view key, uint16_t* shard, absl::Time* when,
                      MessageId* id, uint32_t* index) {
  if (key.size() != 22) return false;
  *shard = static_cast<uint16_t>(GetBig(key, 2));
  *when = absl::FromUnixMicros(static_cast<int64_t>(GetBig(key.substr(2), 8)));
  *id = GetBig(key.substr(10), 8);
  *index = static_cast<uint32_t>(GetBig(key.substr(18), 4));
  return true;
}

std::string EncodeEnvelope(const Envelope& e) {
  std::string v;
  v.push_back(kVersion);
  PutStr(&v, e.sender);
  PutStr(&v, e.envid);
  v.push_back(static_cast<char>(e.ret));
  PutStr(&v, e.tenant);
  PutStr(&v, e.campaign);
  PutStr(&v, e.client_address);
  PutStr(&v, e.helo);
  PutStr(&v, e.auth_user);
  PutStr(&v, e.tls);
  PutTime(&v, e.received);
  PutVarint(&v, e.recipient_count);
  PutVarint(&v, e.body_bytes);
  // Added later, at the end: a record without it has no listener.
  if (!e.listener.empty()) PutStr(&v, e.listener);
  return v;
}

absl::StatusOr<Envelope> DecodeEnvelope(absl::string_view value) {
  Reader r(value);
  if (r.Byte() != kVersion) {
    return absl::DataLossError("envelope: unknown record version");
  }
  Envelope e;
  e.sender = r.Str();
  e.envid = r.Str();
  uint8_t ret = r.Byte();
  e.ret = ret <= 2 ? static_cast<DsnRet>(ret) : DsnRet::kUnspecified;
  e.tenant = r.Str();
  e.campaign = r.Str();
  e.client_address = r.Str();
  e.helo = r.Str();
  e.auth_user = r.Str();
  e.tls = r.Str();
  e.received = r.Time();
  e.recipient_count = static_cast<uint32_t>(r.Varint());
  e.body_bytes = r.Varint();
  if (!r.done()) e.listener = r.Str();
  if (!r.ok()) return absl::DataLossError("envelope: truncated record");
  return e;
}

std::string EncodeRecipient(const RecipientRecord& rec) {
  std::string v;
  v.push_back(kVersion);
  PutStr(&v, rec.spec.address);
  PutStr(&v, rec.spec.orcpt);
  v.push_back(static_cast<char>(rec.spec.notify));
  PutStr(&v, rec.spec.site);
  PutVarint(&v, rec.spec.shard);
  v.push_back(static_cast<char>(rec.state));
  PutVarint(&v, rec.attempts);
  PutTime(&v, rec.next_attempt);
  PutStr(&v, rec.last_reply.ToString());
  // Added later, at the end: a record without them decodes as never held
  // and never notified of a delay.
  if (rec.held > absl::ZeroDuration() || rec.delay_notified) {
    PutVarint(&v, static_cast<uint64_t>(absl::ToInt64Seconds(rec.held)));
  }
  if (rec.delay_notified) v.push_back(1);
  return v;
}

absl::StatusOr<RecipientRecord> DecodeRecipient(MessageId id, uint32_t index,
                                                absl::string_view value) {
  Reader r(value);
  if (r.Byte() != kVersion) {
    return absl::DataLossError("recipient: unknown record version");
  }
  RecipientRecord rec;
  rec.message = id;
  rec.index = index;
  rec.spec.address = r.Str();
  rec.spec.orcpt = r.Str();
  rec.spec.notify = r.Byte();
  rec.spec.site = r.Str();
  rec.spec.shard = static_cast<uint16_t>(r.Varint());
  uint8_t state = r.Byte();
  if (state > 4) return absl::DataLossError("recipient: unknown state");
  rec.state = static_cast<RecipientState>(state);
  rec.attempts = static_cast<uint32_t>(r.Varint());
  rec.next_attempt = r.Time();
  rec.last_reply = Reply::Parse(r.Str());
  if (!r.ok()) return absl::DataLossError("recipient: truncated record");
  if (!r.done()) {
    rec.held = absl::Seconds(static_cast<int64_t>(r.Varint()));
    if (!r.ok()) return absl::DataLossError("recipient: truncated record");
  }
  if (!r.done()) rec.delay_notified = (r.Byte() & 1) != 0;
  return rec;
}

}  // namespace codec
}  // namespace peregrine::queue
