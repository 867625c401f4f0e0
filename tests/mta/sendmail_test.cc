// sendmail's flags and the message it submits (no daemon: mta/sendmail.h).
#include "mta/sendmail.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace peregrine {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1795780800);

TEST(SendmailArgs, TheClassicFlags) {
  auto a = ParseSendmailArgs({"-t", "-oi", "-fnews@src.test", "-F", "The News",
                              "-oem", "-v", "-N", "never", "a@b.test"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->extract);
  EXPECT_FALSE(a->dot_ends);
  EXPECT_EQ(a->sender, "news@src.test");
  EXPECT_TRUE(a->sender_given);
  EXPECT_EQ(a->full_name, "The News");
  EXPECT_EQ(a->recipients, std::vector<std::string>{"a@b.test"});
  a = ParseSendmailArgs({"-f", "<>", "-i", "--", "-odd@b.test"});
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->sender, "");  // The null sender.
  EXPECT_TRUE(a->sender_given);
  EXPECT_EQ(a->recipients, std::vector<std::string>{"-odd@b.test"});
  a = ParseSendmailArgs({"-C", "/etc/peregrine.toml", "x@y.test"});
  EXPECT_EQ(a->config_path, "/etc/peregrine.toml");
}

TEST(SendmailArgs, WhatItDoesNotTakeIsNamed) {
  for (auto [args, words] :
       std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"-Z"}, "unknown flag -Z"},
           {{"-f"}, "-f needs a value"},
           {{"-bs"}, "-bs"},
           {{"-bp"}, "peregrine queue"},
           {{"-f", "a@b>\r\nRCPT TO:<x@y"}, "-f: the sender"},
           {{"a@b.test\r\nRSET"}, "is not an address"},
           {{"a b@c.test"}, "is not an address"}}) {
    auto a = ParseSendmailArgs(args);
    ASSERT_FALSE(a.ok()) << args[0];
    EXPECT_TRUE(absl::StrContains(a.status().message(), words)) << a.status();
  }
}

TEST(PrepareMail, RecipientsFromTheHeaderAndBccRemoved) {
  SendmailArgs a;
  a.extract = true;
  std::string in =
      "To: Ann <ann@x.test>, bob@y.test\n"
      "Cc: team: carl@z.test, \"D, E\" <de@z.test>;\n"
      "Bcc: hidden@w.test\n"
      "Subject: a long\n"
      " folded subject\n"
      "\n"
      "hello\n"
      ".leading dot\n";
  auto m = PrepareMail(in, a, "me@host.test", "host.test", kNow);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->recipients,
            (std::vector<std::string>{"ann@x.test", "bob@y.test", "carl@z.test",
                                      "de@z.test", "hidden@w.test"}));
  EXPECT_FALSE(absl::StrContains(m->message, "Bcc"));
  EXPECT_FALSE(absl::StrContains(m->message, "hidden"));
  EXPECT_TRUE(absl::StrContains(m->message, "From: me@host.test\r\n"));
  EXPECT_TRUE(absl::StrContains(m->message, "Message-ID: <"));
  EXPECT_TRUE(absl::StrContains(m->message, "Date: "));
  EXPECT_TRUE(
      absl::StrContains(m->message, "Subject: a long\r\n folded subject\r\n"));
  EXPECT_TRUE(absl::EndsWith(m->message, "\r\n\r\nhello\r\n.leading dot\r\n"));
}

TEST(PrepareMail, ALoneDotEndsTheInputUnlessDashI) {
  SendmailArgs a;
  a.recipients = {"r@x.test"};
  std::string in = "From: a@b.test\nSubject: s\n\nline\n.\nafter\n";
  auto m = PrepareMail(in, a, "a@b.test", "h.test", kNow);
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(absl::StrContains(m->message, "after"));
  EXPECT_EQ(m->message.find("From: "), m->message.rfind("From: "));  // Kept.
  a.dot_ends = false;
  m = PrepareMail(in, a, "a@b.test", "h.test", kNow);
  EXPECT_TRUE(absl::StrContains(m->message, "line\r\n.\r\nafter\r\n"));
}

TEST(PrepareMail, ABareCarriageReturnIsALineEnd) {
  // Found by sendmail_fuzz: a CR alone went out as it was, and SMTP allows
  // CR and LF only together.
  SendmailArgs a;
  a.recipients = {"r@x.test"};
  auto m = PrepareMail("Subj-t \r%", a, "a@b.test", "h.test", kNow);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(absl::EndsWith(m->message, "\r\n\r\nSubj-t \r\n%\r\n"))
      << m->message;
  m = PrepareMail("Subject: s\r\n\r\n\r\n", a, "a@b.test", "h.test", kNow);
  EXPECT_TRUE(absl::EndsWith(m->message, "Subject: s\r\n\r\n\r\n"))
      << m->message;  // The empty body line kept, nothing added.
}

TEST(PrepareMail, BlanksBeforeTheColonNameTheSameField) {
  // Found by sendmail_fuzz: "Message-ID\t:" (RFC 5322's obsolete syntax) is
  // a Message-ID; a space in a name, or a control character, starts the body.
  SendmailArgs a;
  a.extract = true;
  auto m = PrepareMail("To: r@x.test\nMessage-ID\t: <1@x>\nBcc : b@x.test\n\n",
                       a, "a@b.test", "h.test", kNow);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->recipients, (std::vector<std::string>{"r@x.test", "b@x.test"}));
  EXPECT_FALSE(absl::StrContains(m->message, "Message-ID: <")) << m->message;
  EXPECT_FALSE(absl::StrContains(m->message, "Bcc")) << m->message;
  m = PrepareMail("To: r@x.test\nX\x01Y: z\n", a, "a@b.test", "h.test", kNow);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(absl::EndsWith(m->message, "\r\n\r\nX\x01Y: z\r\n"))
      << m->message;
}

TEST(SendmailArgs, TheFullNameStaysOneQuotedLine) {
  // Found by sendmail_fuzz: a CR in -F went into the From header as it was.
  auto a = ParseSendmailArgs({"-F", "Cro\r\nBcc: x@y \"q\"", "r@x.test"});
  ASSERT_TRUE(a.ok());
  auto m = PrepareMail("Subject: s\n\nbody\n", *a, "me@h.test", "h.test", kNow);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(absl::StartsWith(
      m->message, "From: \"Cro  Bcc: x@y \\\"q\\\"\" <me@h.test>\r\n"))
      << m->message;
}

TEST(PrepareMail, FullNameAndNoRecipients) {
  SendmailArgs a;
  a.full_name = "Cron Daemon";
  a.recipients = {"root@x.test"};
  auto m = PrepareMail("no header at all\n", a, "cron@h.test", "h.test", kNow);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(
      absl::StartsWith(m->message, "From: \"Cron Daemon\" <cron@h.test>"));
  EXPECT_TRUE(absl::EndsWith(m->message, "\r\n\r\nno header at all\r\n"));
  a.recipients.clear();
  EXPECT_TRUE(absl::IsInvalidArgument(
      PrepareMail("Subject: x\n\n", a, "c@h.test", "h.test", kNow).status()));
  a.extract = true;
  auto none = PrepareMail("Subject: x\n\n", a, "c@h.test", "h.test", kNow);
  EXPECT_TRUE(absl::StrContains(none.status().message(), "no To, Cc or Bcc"));
}

}  // namespace
}  // namespace peregrine
