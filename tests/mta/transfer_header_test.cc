// X-Peregrine-Transfer: written and read back, removed wherever it is in
// the header (folded, repeated, any case), left alone in the body, and
// not believed when malformed.
#include "mta/transfer_header.h"

#include <string>

#include "gtest/gtest.h"

namespace peregrine {
namespace {

TEST(TransferHeader, RoundTripsWithOddTags) {
  TransferInfo in;
  in.tenant = "acme corp";
  in.campaign = "spring;sale=50%\r\nBcc: x";
  in.attempts = 7;
  in.received = absl::FromUnixSeconds(1795848233);
  in.node = "mx1.example";
  std::string header = TransferHeader(in);
  EXPECT_EQ(header.find("\r\n"), header.size() - 2);  // One line.
  std::string message = header + "Subject: hi\r\n\r\nbody\r\n";
  auto out = TakeTransferHeader(&message);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->tenant, in.tenant);
  EXPECT_EQ(out->campaign, in.campaign);
  EXPECT_EQ(out->attempts, 7u);
  EXPECT_EQ(out->received, in.received);
  EXPECT_EQ(out->node, in.node);
  EXPECT_EQ(message, "Subject: hi\r\n\r\nbody\r\n");
}

TEST(TransferHeader, EveryFieldGoesTheFirstCounts) {
  std::string message =
      "Subject: a\r\n"
      "x-peregrine-transfer: v=1;\r\n attempts=2\r\n"
      "To: b@example.test\r\n"
      "X-Peregrine-Transfer: v=1; attempts=9\r\n"
      "\r\n"
      "X-Peregrine-Transfer: in the body, untouched\r\n";
  auto info = TakeTransferHeader(&message);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->attempts, 2u);
  EXPECT_EQ(message,
            "Subject: a\r\nTo: b@example.test\r\n\r\n"
            "X-Peregrine-Transfer: in the body, untouched\r\n");
}

TEST(TransferHeader, MalformedIsRemovedAndNotBelieved) {
  for (const char* field : {"X-Peregrine-Transfer: attempts=2",  // No version.
                            "X-Peregrine-Transfer: v=2; attempts=2",
                            "X-Peregrine-Transfer: v=1; attempts=-1",
                            "X-Peregrine-Transfer: v=1; attempts=999999999999",
                            "X-Peregrine-Transfer: v=1; received=x",
                            "X-Peregrine-Transfer: v=1; tenant=a b",
                            "X-Peregrine-Transfer: v=1; tenant=%zz",
                            "X-Peregrine-Transfer: v=1; tenant=%4",
                            "X-Peregrine-Transfer: v=1; shard=3",
                            "X-Peregrine-Transfer: v=1; campaign"}) {
    std::string message = std::string(field) + "\r\nSubject: s\r\n\r\nb";
    EXPECT_FALSE(TakeTransferHeader(&message).has_value()) << field;
    EXPECT_EQ(message, "Subject: s\r\n\r\nb") << field;
  }
  std::string huge =
      "X-Peregrine-Transfer: v=1; tenant=" + std::string(5000, 'a') +
      "\r\n\r\n";
  EXPECT_FALSE(TakeTransferHeader(&huge).has_value());
  EXPECT_EQ(huge, "\r\n");
}

TEST(TransferHeader, AMessageWithoutOneIsUnchanged) {
  std::string message = "Subject: x\r\n\r\nbody";
  EXPECT_FALSE(TakeTransferHeader(&message).has_value());
  EXPECT_EQ(message, "Subject: x\r\n\r\nbody");
  std::string bare = "no header at all, no line end";
  EXPECT_FALSE(TakeTransferHeader(&bare).has_value());
  EXPECT_EQ(bare, "no header at all, no line end");
}

}  // namespace
}  // namespace peregrine
