#include "dns/message.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace peregrine::dns {
namespace {

class Reader {
 public:
  explicit Reader(absl::string_view packet) : packet_(packet) {}
  bool ok() const { return ok_; }
  size_t pos() const { return pos_; }
  void Skip(size_t n) {
    if (pos_ + n > packet_.size())
      Fail();
    else
      pos_ += n;
  }
  uint8_t U8() {
    if (pos_ + 1 > packet_.size()) return Fail();
    return static_cast<uint8_t>(packet_[pos_++]);
  }
  uint16_t U16() { return static_cast<uint16_t>((U8() << 8) | U8()); }
  uint32_t U32() { return (static_cast<uint32_t>(U16()) << 16) | U16(); }
  absl::string_view Bytes(size_t n) {
    if (pos_ + n > packet_.size()) {
      Fail();
      return {};
    }
    absl::string_view out = packet_.substr(pos_, n);
    pos_ += n;
    return out;
  }

  // A possibly compressed name at the current position (RFC 1035 §4.1.4).
  std::string Name() { return NameAt(&pos_); }

  std::string NameAt(size_t* at) {
    std::string name;
    size_t p = *at;
    bool jumped = false;
    int jumps = 0;
    while (true) {
      if (p >= packet_.size()) return FailName();
      uint8_t len = static_cast<uint8_t>(packet_[p]);
      if ((len & 0xC0) == 0xC0) {
        if (p + 1 >= packet_.size() || ++jumps > 32) return FailName();
        size_t target =
            ((len & 0x3F) << 8) | static_cast<uint8_t>(packet_[p + 1]);
        if (!jumped) *at = p + 2;
        jumped = true;
        p = target;
        continue;
      }
      if (len & 0xC0) return FailName();  // Reserved label types.
      ++p;
      if (len == 0) break;
      if (p + len > packet_.size() || name.size() + len + 1 > 255) {
        return FailName();
      }
      if (!name.empty()) name += '.';
      name.append(packet_.data() + p, len);
      p += len;
    }
    if (!jumped) *at = p;
    return absl::AsciiStrToLower(name);
  }

 private:
  uint8_t Fail() {
    ok_ = false;
    pos_ = packet_.size();
    return 0;
  }
  std::string FailName() {
    Fail();
    return "";
  }

  absl::string_view packet_;
  size_t pos_ = 0;
  bool ok_ = true;
};

bool ParseRecord(Reader& r, Record* rec) {
  rec->name = r.Name();
  rec->type = r.U16();
  uint16_t klass = r.U16();
  rec->ttl = r.U32();
  uint16_t rdlength = r.U16();
  if (!r.ok()) return false;
  // Clamp: RFC 2181 §8 says values with the top bit set mean zero.
  if (rec->ttl > 0x7FFFFFFF) rec->ttl = 0;
  size_t start = r.pos();
  size_t end = start + rdlength;
  (void)klass;
  switch (rec->type) {
    case kA: {
      absl::string_view b = r.Bytes(4);
      if (rdlength != 4 || b.size() != 4) return false;
      rec->address = IpAddress::V4(reinterpret_cast<const uint8_t*>(b.data()));
      break;
    }
    case kAaaa: {
      absl::string_view b = r.Bytes(16);
      if (rdlength != 16 || b.size() != 16) return false;
      rec->address = IpAddress::V6(reinterpret_cast<const uint8_t*>(b.data()));
      break;
    }
    case kCname:
    case kPtr:
      rec->target = r.Name();
      break;
    case kMx:
      rec->preference = r.U16();
      rec->target = r.Name();
      break;
    case kTxt:
      while (r.ok() && r.pos() < end) {
        uint8_t len = r.U8();
        rec->texts.push_back(std::string(r.Bytes(len)));
      }
      break;
    case kTlsa: {
      if (rdlength < 3) return false;
      rec->tlsa_usage = r.U8();
      rec->tlsa_selector = r.U8();
      rec->tlsa_matching = r.U8();
      rec->tlsa_data = std::string(r.Bytes(rdlength - 3));
      break;
    }
    case kSoa: {
      r.Name();    // MNAME
      r.Name();    // RNAME
      r.Skip(16);  // SERIAL REFRESH RETRY EXPIRE
      rec->soa_minimum = r.U32();
      break;
    }
    default:
      r.Skip(rdlength);
      return r.ok();
  }
  // The record data must end exactly where its length says.
  return r.ok() && r.pos() == end;
}

}  // namespace

absl::StatusOr<IpAddress> IpAddress::Parse(absl::string_view text) {
  std::string s(text);
  IpAddress ip;
  if (inet_pton(AF_INET, s.c_str(), ip.bytes_) == 1) {
    ip.family_ = AF_INET;
  } else if (inet_pton(AF_INET6, s.c_str(), ip.bytes_) == 1) {
    ip.family_ = AF_INET6;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is not an IP address"));
  }
  return ip;
}

IpAddress IpAddress::V4(const uint8_t bytes[4]) {
  IpAddress ip;
  ip.family_ = AF_INET;
  std::memcpy(ip.bytes_, bytes, 4);
  return ip;
}

IpAddress IpAddress::V6(const uint8_t bytes[16]) {
  IpAddress ip;
  ip.family_ = AF_INET6;
  std::memcpy(ip.bytes_, bytes, 16);
  return ip;
}

std::string IpAddress::ToString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family_ == 0) return "none";
  inet_ntop(family_, bytes_, buf, sizeof(buf));
  return buf;
}

std::string IpAddress::ReverseName() const {
  std::string out;
  if (family_ == AF_INET) {
    return absl::StrFormat("%d.%d.%d.%d.in-addr.arpa", bytes_[3], bytes_[2],
                           bytes_[1], bytes_[0]);
  }
  static const char kHex[] = "0123456789abcdef";
  for (int i = 15; i >= 0; --i) {
    out += kHex[bytes_[i] & 0xF];
    out += '.';
    out += kHex[bytes_[i] >> 4];
    out += '.';
  }
  return out + "ip6.arpa";
}

bool IpAddress::operator==(const IpAddress& other) const {
  return family_ == other.family_ &&
         std::memcmp(bytes_, other.bytes_, family_ == AF_INET ? 4 : 16) == 0;
}

std::string TypeName(uint16_t type) {
  switch (type) {
    case kA:
      return "A";
    case kCname:
      return "CNAME";
    case kSoa:
      return "SOA";
    case kPtr:
      return "PTR";
    case kMx:
      return "MX";
    case kTxt:
      return "TXT";
    case kAaaa:
      return "AAAA";
    case kTlsa:
      return "TLSA";
  }
  return absl::StrCat("TYPE", type);
}

std::string NormalizeName(absl::string_view name) {
  while (!name.empty() && name.back() == '.') name.remove_suffix(1);
  return absl::AsciiStrToLower(name);
}

absl::StatusOr<Response> ParseResponse(absl::string_view packet) {
  Reader r(packet);
  Response out;
  out.id = r.U16();
  uint16_t flags = r.U16();
  uint16_t qdcount = r.U16();
  uint16_t ancount = r.U16();
  uint16_t nscount = r.U16();
  r.U16();  // ARCOUNT: additional records are not used.
  if (!r.ok()) return absl::DataLossError("DNS response shorter than a header");
  if (!(flags & 0x8000))
    return absl::DataLossError("DNS packet is not a response");
  out.truncated = flags & 0x0200;
  out.authenticated = flags & 0x0020;
  out.rcode = flags & 0xF;
  for (int i = 0; i < qdcount && r.ok(); ++i) {
    r.Name();
    r.Skip(4);
  }
  for (int i = 0; i < ancount + nscount; ++i) {
    Record rec;
    if (!ParseRecord(r, &rec)) {
      return absl::DataLossError(absl::StrCat("malformed DNS record ", i + 1));
    }
    (i < ancount ? out.answers : out.authority).push_back(std::move(rec));
  }
  if (!r.ok()) return absl::DataLossError("truncated DNS response");
  return out;
}

}  // namespace peregrine::dns
