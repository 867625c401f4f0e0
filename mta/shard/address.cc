#include "mta/shard/address.h"

#include <arpa/inet.h>

#include <cstring>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace peregrine::shard {

absl::StatusOr<SocketAddress> SocketAddress::Parse(absl::string_view text) {
  absl::string_view host;
  absl::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == absl::string_view::npos || close + 1 >= text.size() ||
        text[close + 1] != ':') {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", text, "' is not an address: expected \"[IPv6]:port\""));
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", text,
                       "' is not an address: expected \"IPv4:port\" or "
                       "\"[IPv6]:port\", e.g. \"127.0.0.1:2525\""));
    }
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (host.find(':') != absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", text, "': an IPv6 address needs brackets, e.g. \"[::1]:2525\""));
    }
  }
  uint32_t port = 0;
  if (!absl::SimpleAtoi(port_text, &port) || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "': port '", port_text,
                     "' is not a number from 0 to 65535"));
  }
  SocketAddress out;
  std::string host_str(host);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out.storage_);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.storage_);
  if (inet_pton(AF_INET, host_str.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    out.length_ = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, host_str.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    out.length_ = sizeof(sockaddr_in6);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", text, "': '", host,
        "' is not a literal IP address (host names are not accepted here)"));
  }
  return out;
}

SocketAddress SocketAddress::FromSockaddr(const sockaddr* sa, socklen_t len) {
  SocketAddress out;
  if (len > sizeof(out.storage_)) len = sizeof(out.storage_);
  std::memcpy(&out.storage_, sa, len);
  out.length_ = len;
  return out;
}

uint16_t SocketAddress::port() const {
  if (family() == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  }
  if (family() == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
  }
  return 0;
}

std::string SocketAddress::HostString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family() == AF_INET) {
    inet_ntop(AF_INET,
              &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, buf,
              sizeof(buf));
  } else if (family() == AF_INET6) {
    inet_ntop(AF_INET6,
              &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, buf,
              sizeof(buf));
  } else {
    return "unspecified";
  }
  return buf;
}

std::string SocketAddress::ToString() const {
  if (family() == AF_INET6)
    return absl::StrCat("[", HostString(), "]:", port());
  return absl::StrCat(HostString(), ":", port());
}

absl::StatusOr<Cidr> Cidr::Parse(absl::string_view text) {
  absl::string_view host = text;
  absl::string_view prefix_text;
  size_t slash = text.find('/');
  if (slash != absl::string_view::npos) {
    host = text.substr(0, slash);
    prefix_text = text.substr(slash + 1);
  }
  Cidr out;
  std::string host_str(host);
  int max_prefix = 0;
  if (inet_pton(AF_INET, host_str.c_str(), out.bytes_) == 1) {
    out.family_ = AF_INET;
    max_prefix = 32;
  } else if (inet_pton(AF_INET6, host_str.c_str(), out.bytes_) == 1) {
    out.family_ = AF_INET6;
    max_prefix = 128;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", text,
        "' is not a network: expected an address with an optional /prefix, "
        "e.g. \"10.0.0.0/8\" or \"::1\""));
  }
  out.prefix_ = max_prefix;
  if (slash != absl::string_view::npos) {
    int prefix = -1;
    if (!absl::SimpleAtoi(prefix_text, &prefix) || prefix < 0 ||
        prefix > max_prefix) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", text, "': prefix length must be a number from 0 to ",
          max_prefix));
    }
    out.prefix_ = prefix;
  }
  // Clear host bits so that "10.1.2.3/8" means 10.0.0.0/8.
  for (int bit = out.prefix_; bit < max_prefix; ++bit) {
    out.bytes_[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
  }
  return out;
}

bool Cidr::Contains(const SocketAddress& address) const {
  const uint8_t* bytes = nullptr;
  uint8_t mapped[4];
  if (address.family() == AF_INET && family_ == AF_INET) {
    bytes = reinterpret_cast<const uint8_t*>(
        &reinterpret_cast<const sockaddr_in*>(address.sockaddr_ptr())
             ->sin_addr);
  } else if (address.family() == AF_INET6) {
    const auto* a6 =
        &reinterpret_cast<const sockaddr_in6*>(address.sockaddr_ptr())
             ->sin6_addr;
    if (family_ == AF_INET6) {
      bytes = a6->s6_addr;
    } else if (IN6_IS_ADDR_V4MAPPED(a6)) {
      // ::ffff:127.0.0.1 from a dual-stack socket matches 127.0.0.0/8.
      std::memcpy(mapped, a6->s6_addr + 12, 4);
      bytes = mapped;
    }
  }
  if (bytes == nullptr) return false;
  int full = prefix_ / 8;
  if (std::memcmp(bytes, bytes_, full) != 0) return false;
  int rest = prefix_ % 8;
  if (rest == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xFFu << (8 - rest));
  return (bytes[full] & mask) == (bytes_[full] & mask);
}

bool Cidr::Covers(const Cidr& inner) const {
  if (family_ != inner.family_ || prefix_ > inner.prefix_) return false;
  int full = prefix_ / 8;
  if (std::memcmp(inner.bytes_, bytes_, full) != 0) return false;
  int rest = prefix_ % 8;
  if (rest == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xFFu << (8 - rest));
  return (inner.bytes_[full] & mask) == (bytes_[full] & mask);
}

bool Cidr::TooBroad() const {
  if (IsPrivate()) return false;  // fc00::/7 is short, and private.
  if (family_ == AF_INET) return prefix_ < 8;
  if (prefix_ < 16) return true;
  // ::ffff:0:0/96 holds every IPv4 address as seen on a dual-stack socket.
  static const Cidr mapped = *Cidr::Parse("::ffff:0:0/96");
  if (prefix_ <= 96) return Covers(mapped);
  return prefix_ < 96 + 8 && mapped.Covers(*this);
}

bool Cidr::IsPrivate() const {
  static const std::vector<Cidr>* const kPrivate = [] {
    auto* v = new std::vector<Cidr>;
    for (const char* n :
         {"127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
          "100.64.0.0/10", "169.254.0.0/16", "::1/128", "fc00::/7", "fe80::/10",
          "::ffff:127.0.0.0/104", "::ffff:10.0.0.0/104",
          "::ffff:172.16.0.0/108", "::ffff:192.168.0.0/112"}) {
      v->push_back(*Cidr::Parse(n));
    }
    return v;
  }();
  for (const Cidr& p : *kPrivate) {
    if (p.Covers(*this)) return true;
  }
  return false;
}

std::string Cidr::ToString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(family_, bytes_, buf, sizeof(buf));
  return absl::StrCat(buf, "/", prefix_);
}

bool SocketAddress::IsLoopback() const {
  if (family() == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(&storage_);
    return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
  }
  if (family() == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(&storage_);
    if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) return true;
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      return in6->sin6_addr.s6_addr[12] == 127;
    }
  }
  return false;
}

}  // namespace peregrine::shard
