// Advice(): what send-test and `queue show` tell an operator about a reply.
#include "mta/advice.h"

#include "gtest/gtest.h"

namespace peregrine {
namespace {

TEST(Advice, TheCommonTroubles) {
  auto says = [](const char* reply, const char* words) {
    std::string a = Advice(reply);
    EXPECT_NE(a.find(words), std::string::npos) << reply << " -> " << a;
  };
  says("451 4.4.1 connect to mx.example.com:25: Connection timed out",
       "port 25 seems blocked");
  says("535 5.7.8 Username and Password not accepted", "app password");
  says("451 4.4.2 smarthost smtp.gmail.com sent no greeting",
       "implicit TLS for 465");
  says("552 5.3.4 Message size exceeds fixed limit", "larger than");
  says(
      "550 5.7.26 This message does not have authentication information "
      "or fails to pass authentication checks (SPF or DKIM)",
      "peregrine dns-records");
  says("550 5.1.1 <x@y.test>: Recipient address rejected: User unknown",
       "does not exist");
  says("451 4.7.1 Greylisted, try again later", "retries by itself");
  says("554 5.7.1 <a@b.test>: Relay access denied", "relaying needs AUTH");
  EXPECT_EQ(Advice("250 2.0.0 Ok"), "");
  EXPECT_EQ(Advice(""), "");
}

}  // namespace
}  // namespace peregrine
