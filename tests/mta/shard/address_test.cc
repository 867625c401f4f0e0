#include "mta/shard/address.h"

#include "gtest/gtest.h"

namespace peregrine::shard {
namespace {

struct AddressCase {
  const char* input;
  bool ok;
  const char* printed;
};

TEST(SocketAddressTest, ParsesAndPrints) {
  const AddressCase cases[] = {
      {"127.0.0.1:2525", true, "127.0.0.1:2525"},
      {"0.0.0.0:25", true, "0.0.0.0:25"},
      {"[::1]:2587", true, "[::1]:2587"},
      {"[2001:db8::1]:465", true, "[2001:db8::1]:465"},
      {"127.0.0.1:0", true, "127.0.0.1:0"},
      {"127.0.0.1", false, ""},
      {"127.0.0.1:65536", false, ""},
      {"127.0.0.1:-1", false, ""},
      {"127.0.0.1:http", false, ""},
      {"::1:25", false, ""},
      {"[::1]25", false, ""},
      {"localhost:25", false, ""},
      {"", false, ""},
  };
  for (const AddressCase& c : cases) {
    auto parsed = SocketAddress::Parse(c.input);
    EXPECT_EQ(parsed.ok(), c.ok) << c.input;
    if (parsed.ok()) {
      EXPECT_EQ(parsed->ToString(), c.printed) << c.input;
    }
  }
}

TEST(CidrTest, MatchesAddresses) {
  struct Case {
    const char* cidr;
    const char* address;
    bool contains;
  };
  const Case cases[] = {
      {"127.0.0.0/8", "127.1.2.3:1", true},
      {"127.0.0.0/8", "128.0.0.1:1", false},
      {"10.1.2.3/8", "10.200.0.1:1", true},  // Host bits are ignored.
      {"192.168.1.0/24", "192.168.1.255:1", true},
      {"192.168.1.0/24", "192.168.2.1:1", false},
      {"192.168.1.0/23", "192.168.1.1:1", true},
      {"::1", "[::1]:1", true},
      {"::1", "[::2]:1", false},
      {"::1", "127.0.0.1:1", false},
      {"2001:db8::/32", "[2001:db8:ffff::1]:1", true},
      {"2001:db8::/32", "[2001:db9::1]:1", false},
      {"127.0.0.0/8", "[::ffff:127.0.0.1]:1", true},  // v4-mapped.
      {"0.0.0.0/0", "8.8.8.8:1", true},
  };
  for (const Case& c : cases) {
    auto cidr = Cidr::Parse(c.cidr);
    ASSERT_TRUE(cidr.ok()) << c.cidr;
    auto address = SocketAddress::Parse(c.address);
    ASSERT_TRUE(address.ok()) << c.address;
    EXPECT_EQ(cidr->Contains(*address), c.contains)
        << c.cidr << " " << c.address;
  }
}

TEST(CidrTest, RejectsBadNetworks) {
  for (const char* bad : {"127.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0/8",
                          "example.com", "", "10.0.0.0/x"}) {
    EXPECT_FALSE(Cidr::Parse(bad).ok()) << bad;
  }
  EXPECT_EQ(Cidr::Parse("10.9.8.7/8")->ToString(), "10.0.0.0/8");
}

TEST(CidrTest, BreadthAndPrivacy) {
  struct Case {
    const char* net;
    bool too_broad;
    bool is_private;
  };
  const Case cases[] = {
      {"0.0.0.0/0", true, false},
      {"64.0.0.0/2", true, false},
      {"10.0.0.0/8", false, true},
      {"11.0.0.0/8", false, false},
      {"127.0.0.0/8", false, true},
      {"172.16.0.0/12", false, true},
      {"172.15.0.0/16", false, false},
      {"192.168.1.0/24", false, true},
      {"100.64.0.0/10", false, true},
      {"198.51.100.7", false, false},
      {"::/0", true, false},
      {"2000::/3", true, false},
      {"2001:db8::/32", false, false},
      {"::1", false, true},
      {"fd12:3456::/32", false, true},
      {"fe80::/10", false, true},
      {"::/64", true, false},  // Holds ::ffff:a.b.c.d, all of IPv4.
      {"::ffff:0:0/96", true, false},
      {"::ffff:0:0/100", true, false},
      {"::ffff:10.0.0.0/104", false, true},
      {"::ffff:8.0.0.0/104", false, false},
  };
  for (const Case& c : cases) {
    auto cidr = Cidr::Parse(c.net);
    ASSERT_TRUE(cidr.ok()) << c.net;
    EXPECT_EQ(cidr->TooBroad(), c.too_broad) << c.net;
    EXPECT_EQ(cidr->IsPrivate(), c.is_private) << c.net;
  }
  EXPECT_TRUE(Cidr::Parse("10.0.0.0/8")->Covers(*Cidr::Parse("10.1.2.0/24")));
  EXPECT_FALSE(Cidr::Parse("10.1.2.0/24")->Covers(*Cidr::Parse("10.0.0.0/8")));
  EXPECT_FALSE(Cidr::Parse("10.0.0.0/8")->Covers(*Cidr::Parse("::1")));
}

}  // namespace
}  // namespace peregrine::shard
