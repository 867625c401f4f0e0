#include "mta/smtp/server_session.h"

#include <functional>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peregrine::smtp {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

SessionConfig Trusted() {
  SessionConfig c;
  c.hostname = "mx.test";
  c.client_address = "127.0.0.1";
  c.relay_allowed = true;
  return c;
}

struct Outcome {
  std::string output;
  std::vector<Message> messages;
  bool closed = false;
};

// Feeds `input` in pieces of at most `piece` bytes; each finished message
// is "queued" with `queue_status`.
Outcome Dialog(const std::string& input, SessionConfig config = Trusted(),
               size_t piece = SIZE_MAX,
               absl::Status queue_status = absl::OkStatus()) {
  ServerSession s(config);
  Outcome run;
  s.Start();
  auto pump = [&] {
    for (;;) {
      run.output += s.TakeOutput();
      while (auto m = s.TakeMessage()) {
        run.messages.push_back(*m);
        s.MessageQueued(queue_status, "Q1");
        run.output += s.TakeOutput();
      }
      if (!s.blocked()) break;
      s.Resume();  // As the driver does once the output is taken.
    }
  };
  pump();
  for (size_t i = 0; i < input.size(); i += piece) {
    s.Feed(absl::string_view(input).substr(i, piece));
    pump();
  }
  run.closed = s.closing();
  return run;
}

std::vector<std::string> Codes(const std::string& output) {
  std::vector<std::string> codes;
  for (absl::string_view line :
       absl::StrSplit(output, "\r\n", absl::SkipEmpty())) {
    if (line.size() >= 4 && line[3] == ' ')
      codes.push_back(std::string(line.substr(0, 3)));
  }
  return codes;
}

const char kSimple[] =
    "EHLO client.test\r\n"
    "MAIL FROM:<alice@sender.test> SIZE=100 BODY=8BITMIME RET=HDRS "
    "ENVID=e+2B1\r\n"
    "RCPT TO:<bob@dest.test> NOTIFY=FAILURE,DELAY "
    "ORCPT=rfc822;bob@dest.test\r\n"
    "RCPT TO:<carol@dest.test>\r\n"
    "DATA\r\n"
    "Subject: hi\r\n"
    "\r\n"
    "..a stuffed line\r\n"
    "body\r\n"
    ".\r\n"
    "QUIT\r\n";

TEST(ServerSessionTest, WholeDialog) {
  Outcome run = Dialog(kSimple);
  EXPECT_THAT(Codes(run.output), ElementsAre("220", "250", "250", "250", "250",
                                             "354", "250", "221"));
  EXPECT_THAT(run.output, HasSubstr("250 2.0.0 Ok: queued as Q1\r\n"));
  ASSERT_EQ(run.messages.size(), 1u);
  const Message& m = run.messages[0];
  EXPECT_EQ(m.helo, "client.test");
  EXPECT_EQ(m.sender, "alice@sender.test");
  EXPECT_EQ(m.envid, "e+2B1");
  EXPECT_EQ(m.ret, 2);
  EXPECT_TRUE(m.eight_bit);
  ASSERT_EQ(m.recipients.size(), 2u);
  EXPECT_EQ(m.recipients[0].notify, 4 | 8);
  EXPECT_EQ(m.recipients[0].orcpt, "rfc822;bob@dest.test");
  EXPECT_EQ(m.data, "Subject: hi\r\n\r\n.a stuffed line\r\nbody\r\n");
  EXPECT_TRUE(run.closed);
}

TEST(ServerSessionTest, EhloAdvertisesExtensions) {
  Outcome run = Dialog("EHLO c.test\r\n");
  for (const char* ext :
       {"250-PIPELINING", "250-SIZE 26214400", "250-8BITMIME", "250-SMTPUTF8",
        "250-ENHANCEDSTATUSCODES", "250-DSN", "250 CHUNKING"}) {
    EXPECT_THAT(run.output, HasSubstr(std::string(ext) + "\r\n")) << ext;
  }
  EXPECT_THAT(run.output, HasSubstr("250-mx.test Hello c.test [127.0.0.1]"));
}

TEST(ServerSessionTest, SameResultWhateverTheSplit) {
  Outcome whole = Dialog(kSimple);
  for (size_t piece = 1; piece <= 17; ++piece) {
    Outcome split = Dialog(kSimple, Trusted(), piece);
    EXPECT_EQ(split.output, whole.output) << piece;
    ASSERT_EQ(split.messages.size(), 1u) << piece;
    EXPECT_EQ(split.messages[0].data, whole.messages[0].data) << piece;
  }
  // And every single cut point in two pieces.
  std::string input = kSimple;
  for (size_t cut = 1; cut < input.size(); ++cut) {
    ServerSession s(Trusted());
    s.Start();
    std::string out = s.TakeOutput();
    s.Feed(input.substr(0, cut));
    out += s.TakeOutput();
    if (auto m = s.TakeMessage()) {
      s.MessageQueued(absl::OkStatus(), "Q1");
      out += s.TakeOutput();
    }
    s.Feed(input.substr(cut));
    out += s.TakeOutput();
    if (auto m = s.TakeMessage()) {
      s.MessageQueued(absl::OkStatus(), "Q1");
      out += s.TakeOutput();
    }
    EXPECT_EQ(out, whole.output) << "cut at " << cut;
  }
}

// SMTP smuggling: a second message hidden behind a non-standard end of data
// must stay inside the first one.
TEST(ServerSessionTest, SmugglingNeverYieldsASecondMessage) {
  for (const char* fake_end : {"\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n",
                               "\r.\r\n", "\r\n.\r", "\n..\n"}) {
    std::string input = absl::StrCat(
        "EHLO c.test\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<b@d.test>\r\nDATA\r\n"
        "Subject: first\r\n\r\nhello",
        fake_end,
        "MAIL FROM:<evil@s.test>\r\nRCPT TO:<victim@d.test>\r\nDATA\r\n"
        "Subject: smuggled\r\n\r\nevil\r\n.\r\nQUIT\r\n");
    for (size_t piece : {SIZE_MAX, size_t{1}, size_t{3}}) {
      Outcome run = Dialog(input, Trusted(), piece);
      ASSERT_EQ(run.messages.size(), 1u) << absl::CEscape(fake_end);
      EXPECT_THAT(run.messages[0].data, HasSubstr("Subject: smuggled"));
      EXPECT_EQ(run.messages[0].recipients.size(), 1u);
      // Everything in the data has CRLF line ends now.
      EXPECT_EQ(run.messages[0].data.find("\n.\n"), std::string::npos);
      EXPECT_THAT(Codes(run.output),
                  ElementsAre("220", "250", "250", "250", "354", "250", "221"))
          << absl::CEscape(fake_end);
    }
  }
}

TEST(ServerSessionTest, BareLineEndsAreNormalized) {
  Outcome run = Dialog(
      "HELO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<b@d.test>\r\nDATA\r\n"
      "one\ntwo\rthree\r\n.\r\n");
  ASSERT_EQ(run.messages.size(), 1u);
  EXPECT_EQ(run.messages[0].data, "one\r\ntwo\r\nthree\r\n");
}

TEST(ServerSessionTest, EmptyMessageAndPipelinedCommandsWaitForTheQueue) {
  Outcome run = Dialog(
      "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@d.test>\r\nDATA\r\n.\r\n"
      "MAIL FROM:<x@s.test>\r\nRCPT "
      "TO:<y@d.test>\r\nDATA\r\nsecond\r\n.\r\nQUIT\r\n");
  ASSERT_EQ(run.messages.size(), 2u);
  EXPECT_EQ(run.messages[0].sender, "");
  EXPECT_EQ(run.messages[0].data, "");
  EXPECT_EQ(run.messages[1].data, "second\r\n");
  EXPECT_THAT(Codes(run.output),
              ElementsAre("220", "250", "250", "250", "354", "250", "250",
                          "250", "354", "250", "221"));
}

TEST(ServerSessionTest, QueueFailuresAreTransientRefusals) {
  Outcome unavailable =
      Dialog(kSimple, Trusted(), SIZE_MAX, absl::UnavailableError("disk"));
  EXPECT_THAT(unavailable.output,
              HasSubstr("451 4.3.0 Error: queue file write error"));
  EXPECT_THAT(unavailable.output, ::testing::Not(HasSubstr("queued as")));
  Outcome full = Dialog(kSimple, Trusted(), SIZE_MAX,
                        absl::ResourceExhaustedError("floor"));
  EXPECT_THAT(full.output,
              HasSubstr("452 4.3.1 Error: insufficient system storage"));
}

struct ErrorCase {
  const char* name;
  std::string input;
  std::string expected;  // A reply line that must appear.
};

class ErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(ErrorTest, RefusesWithTheRightCode) {
  SessionConfig config = Trusted();
  config.max_recipients = 3;
  config.max_message_bytes = 100;
  Outcome run = Dialog(GetParam().input, config);
  EXPECT_THAT(run.output, HasSubstr(GetParam().expected + "\r\n"))
      << run.output;
  EXPECT_TRUE(run.messages.empty());
}

const char kHeader[] = "EHLO c\r\nMAIL FROM:<a@s.test>\r\n";

INSTANTIATE_TEST_SUITE_P(
    Cases, ErrorTest,
    ::testing::Values(
        ErrorCase{"MailBeforeHelo", "MAIL FROM:<a@s.test>\r\n",
                  "503 5.5.1 Error: send HELO/EHLO first"},
        ErrorCase{"RcptBeforeMail", "EHLO c\r\nRCPT TO:<b@d.test>\r\n",
                  "503 5.5.1 Error: need MAIL command"},
        ErrorCase{"DataBeforeRcpt", std::string(kHeader) + "DATA\r\n",
                  "554 5.5.1 Error: no valid recipients"},
        ErrorCase{"NestedMail",
                  std::string(kHeader) + "MAIL FROM:<x@s.test>\r\n",
                  "503 5.5.1 Error: nested MAIL command"},
        ErrorCase{"HeloWithoutName", "HELO\r\n",
                  "501 5.5.4 Syntax: HELO hostname"},
        ErrorCase{"BadSender", "EHLO c\r\nMAIL FROM:<not an address>\r\n",
                  "501 5.1.7 Bad sender address syntax"},
        ErrorCase{"NoBrackets", "EHLO c\r\nMAIL FROM:a@s.test\r\n",
                  "501 5.1.7 Bad sender address syntax"},
        ErrorCase{"BadRecipient", std::string(kHeader) + "RCPT TO:<nobody>\r\n",
                  "501 5.1.3 Bad recipient address syntax"},
        ErrorCase{"DeclaredSizeTooBig",
                  "EHLO c\r\nMAIL FROM:<a@s.test> SIZE=101\r\n",
                  "552 5.3.4 Error: message size exceeds fixed limit"},
        ErrorCase{"ActualSizeTooBig",
                  std::string(kHeader) + "RCPT TO:<b@d.test>\r\nDATA\r\n" +
                      std::string(150, 'x') + "\r\n.\r\n",
                  "552 5.3.4 Error: message file too big"},
        ErrorCase{"TooManyRecipients",
                  std::string(kHeader) +
                      "RCPT TO:<1@d.test>\r\nRCPT TO:<2@d.test>\r\nRCPT "
                      "TO:<3@d.test>\r\nRCPT TO:<4@d.test>\r\n",
                  "452 4.5.3 Error: too many recipients"},
        ErrorCase{"UnknownMailParameter",
                  "EHLO c\r\nMAIL FROM:<a@s.test> FOO=BAR\r\n",
                  "555 5.5.4 Error: unsupported option FOO"},
        ErrorCase{"ParametersNeedEhlo",
                  "HELO c\r\nMAIL FROM:<a@s.test> SIZE=10\r\n",
                  "555 5.5.4 Error: parameters need EHLO"},
        ErrorCase{
            "BadNotify",
            std::string(kHeader) + "RCPT TO:<b@d.test> NOTIFY=SOMETIMES\r\n",
            "501 5.5.4 Error: bad NOTIFY parameter"},
        ErrorCase{
            "NeverWithOthers",
            std::string(kHeader) + "RCPT TO:<b@d.test> NOTIFY=NEVER,DELAY\r\n",
            "501 5.5.4 Error: NOTIFY=NEVER cannot be combined"},
        ErrorCase{
            "BadOrcpt",
            std::string(kHeader) + "RCPT TO:<b@d.test> ORCPT=nosemicolon\r\n",
            "501 5.5.4 Error: bad ORCPT parameter"},
        ErrorCase{"BadRet", "EHLO c\r\nMAIL FROM:<a@s.test> RET=ALL\r\n",
                  "501 5.5.4 Error: bad RET parameter"},
        ErrorCase{"BadEnvid", "EHLO c\r\nMAIL FROM:<a@s.test> ENVID=a=b\r\n",
                  "501 5.5.4 Error: bad ENVID parameter"},
        ErrorCase{"BinaryMime",
                  "EHLO c\r\nMAIL FROM:<a@s.test> BODY=BINARYMIME\r\n",
                  "555 5.5.4 Error: unsupported BODY parameter"},
        ErrorCase{"Utf8WithoutSmtputf8",
                  "EHLO c\r\nMAIL FROM:<j\xc3\xb6rg@s.test>\r\n",
                  "553 5.6.7 Error: non-ASCII address needs SMTPUTF8"},
        ErrorCase{"LineTooLong", std::string(5000, 'A') + "\r\n",
                  "500 5.5.2 Error: line too long"},
        ErrorCase{"Unknown", "FROB\r\n",
                  "502 5.5.2 Error: command not recognized"},
        ErrorCase{"Expn", "EXPN list\r\n",
                  "502 5.5.1 Error: command not implemented"},
        ErrorCase{"StartTlsNotYet", "EHLO c\r\nSTARTTLS\r\n",
                  "454 4.7.0 TLS not available"},
        ErrorCase{"DataWithArgument", "EHLO c\r\nDATA now\r\n",
                  "501 5.5.4 Syntax: DATA"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(ServerSessionTest, RelayDeniedForUntrustedClients) {
  SessionConfig config = Trusted();
  config.relay_allowed = false;
  Outcome run =
      Dialog(std::string(kHeader) + "RCPT TO:<b@d.test>\r\nDATA\r\n", config);
  EXPECT_THAT(run.output,
              HasSubstr("554 5.7.1 <b@d.test>: Relay access denied\r\n"));
  EXPECT_THAT(run.output,
              HasSubstr("554 5.5.1 Error: no valid recipients\r\n"));
  EXPECT_TRUE(run.messages.empty());
}

TEST(ServerSessionTest, TooManyErrorsCloses) {
  SessionConfig config = Trusted();
  config.max_errors = 3;
  Outcome run = Dialog("A\r\nB\r\nC\r\nD\r\nE\r\n", config);
  EXPECT_THAT(run.output,
              HasSubstr("421 4.7.0 mx.test Error: too many errors\r\n"));
  EXPECT_EQ(Codes(run.output).size(), 1u + 3u + 1u);  // Banner, 3 errors, 421.
  EXPECT_TRUE(run.closed);
}

TEST(ServerSessionTest, Smtputf8AcceptsUtf8Addresses) {
  Outcome run = Dialog(
      "EHLO c\r\nMAIL FROM:<j\xc3\xb6rg@s.test> SMTPUTF8\r\n"
      "RCPT TO:<\xc3\xa9lise@d.test>\r\nDATA\r\nhi\r\n.\r\n");
  ASSERT_EQ(run.messages.size(), 1u);
  EXPECT_TRUE(run.messages[0].smtputf8);
}

TEST(ServerSessionTest, BdatChunksAreTakenAsIs) {
  std::string chunk1 = "Subject: x\r\n\r\n.\r\n";  // No meaning in BDAT.
  std::string chunk2 = "..tail\r\n";
  Outcome run = Dialog(absl::StrCat(
      kHeader, "RCPT TO:<b@d.test>\r\nBDAT ", chunk1.size(), "\r\n", chunk1,
      "BDAT ", chunk2.size(), " LAST\r\n", chunk2, "QUIT\r\n"));
  ASSERT_EQ(run.messages.size(), 1u);
  EXPECT_EQ(run.messages[0].data, chunk1 + chunk2);
  EXPECT_THAT(run.output,
              HasSubstr(absl::StrCat("250 2.0.0 Ok: ", chunk1.size(),
                                     " octets received")));
  EXPECT_THAT(run.output, HasSubstr("queued as Q1"));
  for (size_t piece : {size_t{1}, size_t{5}}) {
    Outcome split = Dialog(absl::StrCat(kHeader, "RCPT TO:<b@d.test>\r\nBDAT ",
                                        chunk1.size(), " LAST\r\n", chunk1),
                           Trusted(), piece);
    ASSERT_EQ(split.messages.size(), 1u);
    EXPECT_EQ(split.messages[0].data, chunk1);
  }
}

// BDAT content is not dot-stuffed, but its bare CRs and LFs are made CRLF
// like DATA's, so "\r.\r" cannot travel on to a next hop that reads it as
// an end of data (SMTP smuggling through BDAT).
TEST(ServerSessionTest, BdatLineEndsAreNormalizedAcrossChunksAndSplits) {
  struct Case {
    std::vector<std::string> chunks;
    std::string data;
  };
  const Case cases[] = {
      {{"hello\r.\rMAIL FROM:<evil@x.test>\r\n"},
       "hello\r\n.\r\nMAIL FROM:<evil@x.test>\r\n"},
      {{"a\nb\n"}, "a\r\nb\r\n"},
      {{"a\r", "\nb"}, "a\r\nb"},        // CRLF split by the chunk boundary.
      {{"a\r", "b"}, "a\r\nb"},          // A bare CR ending a chunk.
      {{"a\r", "\r\nb"}, "a\r\n\r\nb"},  // Then a real CRLF.
      {{"end\r"}, "end\r\n"},            // A bare CR ending the message.
      {{"x\r\n", ".\r\n"}, "x\r\n.\r\n"},
  };
  for (const Case& c : cases) {
    std::string input = absl::StrCat(kHeader, "RCPT TO:<b@d.test>\r\n");
    for (size_t i = 0; i < c.chunks.size(); ++i) {
      absl::StrAppend(&input, "BDAT ", c.chunks[i].size(),
                      i + 1 == c.chunks.size() ? " LAST" : "", "\r\n",
                      c.chunks[i]);
    }
    for (size_t piece : {SIZE_MAX, size_t{1}, size_t{3}}) {
      Outcome run = Dialog(input, Trusted(), piece);
      ASSERT_EQ(run.messages.size(), 1u) << absl::CEscape(input);
      EXPECT_EQ(run.messages[0].data, c.data)
          << absl::CEscape(input) << " piece " << piece;
    }
  }
}

TEST(ServerSessionTest, EhloArgumentsMustBeADomainOrAnAddressLiteral) {
  for (const char* ok : {"client.test", "a", "localhost", "mail-1.example.com.",
                         "DESKTOP_42", "[192.0.2.1]", "[IPv6:2001:db8::1]",
                         "b\xc3\xbc"
                         "cher.test"}) {
    EXPECT_TRUE(IsHeloArgument(ok)) << ok;
    Outcome run = Dialog(absl::StrCat("EHLO ", ok, "\r\n"));
    EXPECT_THAT(Codes(run.output), ElementsAre("220", "250")) << ok;
  }
  for (const char* bad : {"evil.test\rX-Injected: via-helo", "a b", "a..b",
                          ".a", "x;y", "a\x1b[31m", "[1.2.3.4", "[a b]", "[]",
                          "<x>", "evil.test\tX-Injected:"}) {
    EXPECT_FALSE(IsHeloArgument(bad)) << absl::CEscape(bad);
    Outcome run = Dialog(absl::StrCat("EHLO ", bad, "\r\nMAIL FROM:<a@b>\r\n"));
    EXPECT_THAT(Codes(run.output), ElementsAre("220", "501", "503"))
        << absl::CEscape(bad);
    EXPECT_THAT(run.output, testing::Not(HasSubstr("X-Injected")));
  }
  EXPECT_FALSE(IsHeloArgument(std::string(256, 'a')));
  EXPECT_FALSE(IsHeloArgument(std::string(64, 'a') + ".test"));
  // NUL inside the argument.
  Outcome run = Dialog(std::string("EHLO a\0b\r\n", 10));
  EXPECT_THAT(Codes(run.output), ElementsAre("220", "501"));
}

TEST(ServerSessionTest, RefusalsAreNotedOncePerKindWithAHint) {
  SessionConfig c = Trusted();
  c.relay_allowed = false;
  c.max_message_bytes = 100;
  ServerSession s(c);
  s.Start();
  s.Feed(
      "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\n"
      "RCPT TO:<z@y.test>\r\nRSET\r\nMAIL FROM:<a@b.test> SIZE=5000\r\n");
  std::vector<Refusal> r = s.TakeRefusals();
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].kind, Refusal::Kind::kRelayDenied);
  EXPECT_THAT(r[0].reply, HasSubstr("554 5.7.1 <x@y.test>"));
  EXPECT_THAT(r[0].hint, HasSubstr("relay.trusted_networks"));
  EXPECT_EQ(r[1].kind, Refusal::Kind::kTooBig);
  EXPECT_THAT(r[1].hint, HasSubstr("SIZE=5000"));
  EXPECT_TRUE(s.TakeRefusals().empty());
  s.Feed("MAIL FROM:<a@b.test> SIZE=6000\r\n");  // Noted already.
  EXPECT_TRUE(s.TakeRefusals().empty());
  for (int i = 0; i < 30; ++i) s.Feed("BOGUS\r\n");
  r = s.TakeRefusals();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].kind, Refusal::Kind::kTooManyErrors);
  EXPECT_TRUE(s.closing());
}

TEST(ServerSessionTest, BdatWithoutRecipientsConsumesTheChunk) {
  Outcome run = Dialog(absl::StrCat(kHeader, "BDAT 5 LAST\r\nABCDENOOP\r\n"));
  EXPECT_THAT(run.output,
              HasSubstr("554 5.5.1 Error: no valid recipients\r\n"));
  EXPECT_THAT(run.output, HasSubstr("250 2.0.0 Ok\r\n"));  // NOOP after it.
  EXPECT_TRUE(run.messages.empty());
  Outcome bad = Dialog("EHLO c\r\nBDAT lots\r\n");
  EXPECT_THAT(bad.output, HasSubstr("501 5.5.4 Syntax: BDAT size [LAST]"));
  EXPECT_TRUE(bad.closed);
}

TEST(ServerSessionTest, PipelinedCommandsWaitWhileTheOutputIsFull) {
  SessionConfig c = Trusted();
  c.max_output_bytes = 1000;
  ServerSession s(c);
  s.Start();
  std::string flood;
  for (int i = 0; i < 5000; ++i) flood += "EHLO a\r\n";
  s.Feed(flood);
  // One EHLO reply is ~150 bytes: the session stops just past the bound.
  std::string out = s.TakeOutput();
  EXPECT_TRUE(s.blocked());
  EXPECT_LT(out.size(), 1000u + 400u);
  size_t total = 0;
  int rounds = 0;
  while (s.blocked() && rounds < 100000) {
    s.Resume();
    std::string more = s.TakeOutput();
    EXPECT_LT(more.size(), 1000u + 400u);
    total += more.size();
    ++rounds;
  }
  EXPECT_FALSE(s.blocked());
  EXPECT_GT(total, 0u);
  EXPECT_GT(rounds, 100);
  s.Feed("QUIT\r\n");
  EXPECT_THAT(s.TakeOutput(), HasSubstr("221"));
}

TEST(ServerSessionTest, EveryPipelinedCommandIsAnsweredAfterBlocking) {
  SessionConfig c = Trusted();
  c.max_output_bytes = 100;
  std::string input;
  for (int i = 0; i < 300; ++i) input += "NOOP\r\n";
  Outcome run = Dialog(input, c);
  std::vector<std::string> codes = Codes(run.output);
  // The banner, then one 250 per NOOP.
  ASSERT_EQ(codes.size(), 301u);
  for (size_t i = 1; i < codes.size(); ++i) EXPECT_EQ(codes[i], "250");
}

TEST(ServerSessionTest, RsetNoopVrfyHelpQuitAndTimeout) {
  Outcome run = Dialog(std::string(kHeader) +
                       "RSET\r\nRCPT TO:<b@d.test>\r\nNOOP\r\nVRFY "
                       "x\r\nHELP\r\nQUIT\r\nNOOP\r\n");
  EXPECT_THAT(Codes(run.output), ElementsAre("220", "250", "250", "250", "503",
                                             "250", "252", "214", "221"));
  EXPECT_TRUE(run.closed);
  ServerSession s(Trusted());
  s.Start();
  s.TimedOut();
  EXPECT_THAT(s.TakeOutput(),
              HasSubstr("421 4.4.2 mx.test Error: timeout exceeded"));
  EXPECT_TRUE(s.closing());
}

TEST(ServerSessionTest, ShutdownClosesIdleSessionsAtOnce) {
  ServerSession s(Trusted());
  s.Start();
  s.Feed("EHLO c\r\n");
  s.TakeOutput();
  s.Shutdown();
  EXPECT_THAT(s.TakeOutput(), HasSubstr("421 4.3.2 mx.test Service shutting "
                                        "down, closing connection"));
  EXPECT_TRUE(s.closing());
}

TEST(ServerSessionTest, ShutdownLetsTheMessageInFlightFinish) {
  ServerSession s(Trusted());
  s.Start();
  s.Feed("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n");
  s.TakeOutput();
  s.Shutdown();
  EXPECT_FALSE(s.closing());
  s.Feed("DATA\r\n");
  EXPECT_THAT(s.TakeOutput(), HasSubstr("354"));
  s.Feed("Subject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<e@b.test>\r\n");
  ASSERT_TRUE(s.TakeMessage().has_value());
  s.MessageQueued(absl::OkStatus(), "Q1");
  std::string out = s.TakeOutput();
  EXPECT_THAT(out, HasSubstr("250 2.0.0 Ok: queued as Q1"));
  EXPECT_THAT(out, HasSubstr("421 4.3.2"));
  EXPECT_TRUE(s.closing());
}

TEST(ServerSessionTest, StartTlsDropsPipelinedCommandsAndStartsOver) {
  SessionConfig config = Trusted();
  config.tls_available = true;
  ServerSession s(config);
  s.Start();
  s.Feed("EHLO c\r\n");
  EXPECT_THAT(s.TakeOutput(), HasSubstr("250-STARTTLS\r\n"));
  // Injection: commands in the same packet as STARTTLS.
  s.Feed("STARTTLS\r\nMAIL FROM:<evil@s.test>\r\n");
  EXPECT_EQ(s.TakeOutput(), "220 2.0.0 Ready to start TLS\r\n");
  EXPECT_TRUE(s.wants_tls());
  s.Feed("\x16\x03\x01 handshake bytes are not commands");
  EXPECT_EQ(s.TakeOutput(), "");
  s.TlsStarted();
  EXPECT_TRUE(s.tls_active());
  // EHLO is forgotten; the injected MAIL never ran.
  s.Feed("MAIL FROM:<a@s.test>\r\n");
  EXPECT_THAT(s.TakeOutput(),
              HasSubstr("503 5.5.1 Error: send HELO/EHLO first"));
  s.Feed("EHLO c\r\n");
  std::string ehlo = s.TakeOutput();
  EXPECT_THAT(ehlo, ::testing::Not(HasSubstr("STARTTLS")));
  s.Feed("STARTTLS\r\n");
  EXPECT_THAT(s.TakeOutput(), HasSubstr("503 5.5.1 Error: TLS already active"));
}

TEST(ServerSessionTest, SubmissionNeedsTlsThenAuth) {
  SessionConfig config = Trusted();
  config.tls_available = true;
  config.auth_required = true;
  Outcome before_tls = Dialog(std::string(kHeader), config);
  EXPECT_THAT(before_tls.output,
              HasSubstr("530 5.7.0 Must issue a STARTTLS command first"));
  config.tls_active = true;
  Outcome after_tls = Dialog(std::string(kHeader), config);
  EXPECT_THAT(after_tls.output, HasSubstr("530 5.7.0 Authentication required"));
}

SessionConfig Submission() {
  SessionConfig c = Trusted();
  c.relay_allowed = false;
  c.tls_available = true;
  c.tls_active = true;
  c.auth_required = true;
  c.auth_available = true;
  return c;
}

// Runs a dialog, answering each credential check with `accept(user, pass)`.
std::string AuthDialog(SessionConfig config, const std::string& input,
                       std::function<bool(const AuthRequest&)> accept,
                       std::vector<Message>* messages = nullptr) {
  ServerSession s(config);
  s.Start();
  std::string out = s.TakeOutput();
  s.Feed(input);
  for (int i = 0; i < 20; ++i) {
    out += s.TakeOutput();
    if (auto req = s.TakeAuthRequest()) {
      s.AuthResult(accept(*req));
      continue;
    }
    if (auto m = s.TakeMessage()) {
      if (messages) messages->push_back(*m);
      s.MessageQueued(absl::OkStatus(), "Q1");
      continue;
    }
    break;
  }
  return out + s.TakeOutput();
}

TEST(ServerSessionTest, AuthPlainThenSubmit) {
  std::vector<Message> messages;
  // "\0app\0secret" -> AGFwcABzZWNyZXQ=
  std::string out = AuthDialog(
      Submission(),
      "EHLO c\r\nAUTH PLAIN AGFwcABzZWNyZXQ=\r\nMAIL FROM:<a@s.test>\r\n"
      "RCPT TO:<b@d.test>\r\nDATA\r\nhi\r\n.\r\n",
      [](const AuthRequest& r) {
        return r.user == "app" && r.password == "secret";
      },
      &messages);
  EXPECT_THAT(out, HasSubstr("250-AUTH PLAIN LOGIN\r\n"));
  EXPECT_THAT(out, HasSubstr("235 2.7.0 Authentication successful\r\n"));
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].auth_user, "app");  // And relay was allowed.
}

TEST(ServerSessionTest, AuthLoginChallenges) {
  // "app" -> YXBw, "secret" -> c2VjcmV0
  std::string out =
      AuthDialog(Submission(), "EHLO c\r\nAUTH LOGIN\r\nYXBw\r\nc2VjcmV0\r\n",
                 [](const AuthRequest& r) {
                   return r.user == "app" && r.password == "secret";
                 });
  EXPECT_THAT(out, HasSubstr("334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 "));
}

TEST(ServerSessionTest, AuthFailuresAbortsAndLimits) {
  std::string out = AuthDialog(
      Submission(),
      "EHLO c\r\nAUTH PLAIN\r\n*\r\nAUTH CRAM-MD5\r\n"
      "AUTH PLAIN AGFwcAB3cm9uZw==\r\nAUTH PLAIN AGFwcAB3cm9uZw==\r\n"
      "AUTH PLAIN AGFwcAB3cm9uZw==\r\nNOOP\r\n",
      [](const AuthRequest&) { return false; });
  EXPECT_THAT(out,
              HasSubstr("334 \r\n501 5.7.0 Error: authentication aborted"));
  EXPECT_THAT(
      out, HasSubstr("504 5.5.4 Error: unsupported authentication mechanism"));
  EXPECT_THAT(out, HasSubstr("535 5.7.8 Error: authentication failed"));
  EXPECT_THAT(
      out,
      HasSubstr("421 4.7.0 mx.test Error: too many failed authentications"));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("250 2.0.0 Ok\r\n")));  // No NOOP.
}

TEST(ServerSessionTest, NoAuthBeforeTls) {
  SessionConfig config = Submission();
  config.tls_active = false;
  std::string out =
      AuthDialog(config, "EHLO c\r\nAUTH PLAIN AGFwcABzZWNyZXQ=\r\n",
                 [](const AuthRequest&) { return true; });
  EXPECT_THAT(out, ::testing::Not(HasSubstr("AUTH PLAIN LOGIN")));
  EXPECT_THAT(out, HasSubstr("538 5.7.11 Encryption required"));
}

TEST(ParsePathTest, Paths) {
  std::string a;
  absl::string_view rest;
  ASSERT_TRUE(ParsePath(" <a@b.test> SIZE=1", &a, &rest));
  EXPECT_EQ(a, "a@b.test");
  EXPECT_EQ(rest, "SIZE=1");
  ASSERT_TRUE(ParsePath("<>", &a, &rest));
  EXPECT_EQ(a, "");
  ASSERT_TRUE(ParsePath("<@relay.test:a@b.test>", &a, &rest));
  EXPECT_EQ(a, "a@b.test");
  EXPECT_FALSE(ParsePath("a@b.test", &a, &rest));
  EXPECT_FALSE(ParsePath("<a@b.test", &a, &rest));
}

}  // namespace
}  // namespace peregrine::smtp
