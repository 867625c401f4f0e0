#include "mta/submission.h"

#include <random>

#include "absl/random/random.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peregrine {
namespace {

using ::testing::MatchesRegex;

TEST(SubmissionTest, FindsFieldsInTheHeaderSectionOnly) {
  struct Case {
    const char* message;
    bool has_message_id;
  };
  const Case cases[] = {
      {"Message-ID: <a@b>\r\nSubject: x\r\n\r\nbody\r\n", true},
      {"Subject: x\r\nmessage-id: <a@b>\r\n\r\n", true},   // Any case.
      {"Subject: x\r\nMessage-ID : <a@b>\r\n\r\n", true},  // Obsolete space.
      {"Subject: x\r\n\r\nMessage-ID: <in the body>\r\n", false},
      {"Subject: folded\r\n Message-ID: <a continuation>\r\n\r\n", false},
      {"X-Message-ID: <a@b>\r\n\r\n", false},
      {"\r\nMessage-ID: <after an empty header section>\r\n", false},
      {"", false},
      {"Message-ID: <no end of line>", true},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(HasHeaderField(c.message, "Message-ID"), c.has_message_id)
        << c.message;
  }
}

TEST(SubmissionTest, AddsOnlyWhatIsMissing) {
  std::mt19937_64 bits(1);
  absl::Time now = absl::FromCivil(absl::CivilSecond(2026, 11, 27, 0, 0, 0),
                                   absl::UTCTimeZone());
  std::string both = MissingSubmissionFields("Subject: x\r\n\r\nhi\r\n",
                                             "mail.example.com", now, bits);
  EXPECT_THAT(both,
              MatchesRegex("Message-ID: <20261127000000\\.[0-9a-f]{16}"
                           "@mail\\.example\\.com>\r\n"
                           "Date: Fri, 27 Nov 2026 00:00:00 \\+0000\r\n"));
  EXPECT_EQ(MissingSubmissionFields(
                "Date: Thu, 26 Nov 2026 10:00:00 +0100\r\nMessage-Id: <x@y>\r\n"
                "\r\n",
                "h", now, bits),
            "");
  EXPECT_THAT(
      MissingSubmissionFields("Message-ID: <x@y>\r\n\r\n", "h", now, bits),
      MatchesRegex("Date: [^\r]*\r\n"));
  // Two messages in the same second get different ids.
  EXPECT_NE(MissingSubmissionFields("", "h", now, bits),
            MissingSubmissionFields("", "h", now, bits));
}

}  // namespace
}  // namespace peregrine
