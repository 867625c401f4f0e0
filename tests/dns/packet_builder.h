// Builds DNS response packets for tests (no compression).
#pragma once

#include <arpa/inet.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "dns/message.h"

namespace peregrine::dns::testing {

class PacketBuilder {
 public:
  explicit PacketBuilder(int rcode = 0) : rcode_(rcode) {}

  // The AD bit: the server says it validated the answer (DNSSEC).
  PacketBuilder& Authenticated() {
    ad_ = true;
    return *this;
  }

  PacketBuilder& Answer(const std::string& name, uint16_t type, uint32_t ttl,
                        const std::string& rdata) {
    answers_.push_back(Rr(name, type, ttl, rdata));
    return *this;
  }
  PacketBuilder& Soa(const std::string& zone, uint32_t ttl, uint32_t minimum) {
    std::string rdata = Name("ns." + zone) + Name("admin." + zone);
    for (uint32_t v : {1u, 3600u, 600u, 86400u, minimum}) rdata += U32(v);
    authority_.push_back(Rr(zone, kSoa, ttl, rdata));
    return *this;
  }
  PacketBuilder& Question(const std::string& name, uint16_t type) {
    question_ = Name(name) + U16(type) + U16(1);
    return *this;
  }

  std::string Build() const {
    std::string p = U16(0x1234) + U16(0x8180 | (ad_ ? 0x20 : 0) | rcode_) +
                    U16(question_.empty() ? 0 : 1) + U16(answers_.size()) +
                    U16(authority_.size()) + U16(0);
    p += question_;
    for (const auto& a : answers_) p += a;
    for (const auto& a : authority_) p += a;
    return p;
  }

  static std::string Name(const std::string& name) {
    std::string out;
    for (absl::string_view label :
         absl::StrSplit(name, '.', absl::SkipEmpty())) {
      out += static_cast<char>(label.size());
      out.append(label.data(), label.size());
    }
    return out + '\0';
  }
  static std::string U16(uint32_t v) {
    return {static_cast<char>(v >> 8), static_cast<char>(v)};
  }
  static std::string U32(uint32_t v) { return U16(v >> 16) + U16(v & 0xFFFF); }
  static std::string A(const std::string& ip) {
    uint8_t b[4];
    inet_pton(AF_INET, ip.c_str(), b);
    return std::string(reinterpret_cast<char*>(b), 4);
  }
  static std::string Aaaa(const std::string& ip) {
    uint8_t b[16];
    inet_pton(AF_INET6, ip.c_str(), b);
    return std::string(reinterpret_cast<char*>(b), 16);
  }
  static std::string Mx(uint16_t pref, const std::string& host) {
    return U16(pref) + Name(host);
  }
  static std::string Tlsa(uint8_t usage, uint8_t selector, uint8_t matching,
                          const std::string& data) {
    return std::string{static_cast<char>(usage), static_cast<char>(selector),
                       static_cast<char>(matching)} +
           data;
  }
  static std::string Txt(const std::vector<std::string>& strings) {
    std::string out;
    for (const auto& s : strings) out += static_cast<char>(s.size()) + s;
    return out;
  }

 private:
  bool ad_ = false;
  static std::string Rr(const std::string& name, uint16_t type, uint32_t ttl,
                        const std::string& rdata) {
    return Name(name) + U16(type) + U16(1) + U32(ttl) + U16(rdata.size()) +
           rdata;
  }
  int rcode_;
  std::string question_;
  std::vector<std::string> answers_;
  std::vector<std::string> authority_;
};

}  // namespace peregrine::dns::testing
