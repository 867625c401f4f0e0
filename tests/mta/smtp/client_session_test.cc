#include "mta/smtp/client_session.h"

#include <random>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peregrine::smtp {
namespace {

using ::testing::HasSubstr;
using Phase = ClientSession::Phase;

// Without CHUNKING: messages go with DATA.
constexpr char kEhlo[] =
    "250-mx.dest.test Hello\r\n250-PIPELINING\r\n250-SIZE 100000\r\n"
    "250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n"
    "250 ENHANCEDSTATUSCODES\r\n";
// With it (and PIPELINING): BDAT LAST.
constexpr char kEhloChunking[] =
    "250-mx.dest.test Hello\r\n250-PIPELINING\r\n250-SIZE 100000\r\n"
    "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n";

ClientConfig Plain() {
  ClientConfig c;
  c.helo = "out.peregrine.test";
  c.tls = TlsPolicy::kNone;
  return c;
}

// A session greeted and past EHLO with `ehlo` as the server's reply.
ClientSession Ready(ClientConfig config = Plain(), const char* ehlo = kEhlo) {
  ClientSession s(config);
  s.Feed("220 mx.dest.test ESMTP\r\n");
  EXPECT_EQ(s.TakeOutput(), "EHLO out.peregrine.test\r\n");
  s.Feed(ehlo);
  return s;
}

OutMessage Message(const std::string* body, std::vector<std::string> rcpts = {
                                                "a@dest.test", "b@dest.test"}) {
  OutMessage m;
  m.sender = "bounce@sender.test";
  for (auto& r : rcpts) m.recipients.push_back({r, 0, ""});
  m.body = body;
  return m;
}

TEST(ClientSessionTest, PipelinedTransactionWithPerRecipientResults) {
  ClientSession s = Ready();
  ASSERT_EQ(s.phase(), Phase::kReady);
  EXPECT_TRUE(s.pipelining());
  EXPECT_EQ(s.max_size(), 100000u);
  std::string body = "Subject: x\r\n\r\n.leading dot\r\nend";
  OutMessage m = Message(&body);
  m.recipients[0].notify = 4 | 8;
  m.recipients[0].orcpt = "rfc822;a@dest.test";
  m.envid = "ID1";
  m.ret = 2;
  s.SendMessage(m);
  // MAIL, both RCPTs and DATA in one write (RFC 2920).
  EXPECT_EQ(
      s.TakeOutput(),
      "MAIL FROM:<bounce@sender.test> SIZE=31 RET=HDRS ENVID=ID1\r\n"
      "RCPT TO:<a@dest.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;a@dest.test\r\n"
      "RCPT TO:<b@dest.test>\r\nDATA\r\n");
  s.Feed(
      "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <b@dest.test>: no such "
      "user\r\n"
      "354 go ahead\r\n");
  // Dot-stuffed, CRLF added, terminated.
  EXPECT_EQ(s.TakeOutput(), "Subject: x\r\n\r\n..leading dot\r\nend\r\n.\r\n");
  s.Feed("250 2.0.0 Ok: queued as ABC\r\n");
  auto r = s.TakeResult();
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(r->recipients.size(), 2u);
  EXPECT_EQ(r->recipients[0].code, 250);
  EXPECT_EQ(r->recipients[0].text, "Ok: queued as ABC");
  EXPECT_EQ(r->recipients[1].code, 550);
  EXPECT_EQ(r->recipients[1].enhanced, "5.1.1");
  EXPECT_FALSE(r->recipients[1].transient());
  EXPECT_EQ(s.phase(), Phase::kReady);  // Reused for the next message.
  s.SendMessage(Message(&body, {"c@dest.test"}));
  EXPECT_THAT(s.TakeOutput(), HasSubstr("RCPT TO:<c@dest.test>"));
}

TEST(ClientSessionTest, SameResultsWhenRepliesArriveByteByByte) {
  std::string body = "hi\r\n";
  ClientSession s(Plain());
  std::string script = std::string("220 ok\r\n") + kEhlo;
  for (char c : script) s.Feed(std::string(1, c));
  ASSERT_EQ(s.phase(), Phase::kReady);
  s.TakeOutput();
  s.SendMessage(Message(&body, {"a@d.test"}));
  for (char c : std::string("250 ok\r\n250 ok\r\n354 go\r\n250 done\r\n")) {
    s.Feed(std::string(1, c));
  }
  auto r = s.TakeResult();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->recipients[0].code, 250);
}

TEST(ClientSessionTest, HeloFallbackAndNoPipelining) {
  ClientSession s(Plain());
  s.Feed("220 old.test\r\n");
  s.TakeOutput();
  s.Feed("502 5.5.2 what is EHLO\r\n");
  EXPECT_EQ(s.TakeOutput(), "HELO out.peregrine.test\r\n");
  s.Feed("250 old.test\r\n");
  ASSERT_EQ(s.phase(), Phase::kReady);
  std::string body = "x\r\n";
  s.SendMessage(Message(&body));
  EXPECT_EQ(s.TakeOutput(),
            "MAIL FROM:<bounce@sender.test>\r\n");  // No params.
  s.Feed("250 ok\r\n");
  EXPECT_EQ(s.TakeOutput(), "RCPT TO:<a@dest.test>\r\n");
  s.Feed("451 4.7.1 greylisted\r\n");
  EXPECT_EQ(s.TakeOutput(), "RCPT TO:<b@dest.test>\r\n");
  s.Feed("250 ok\r\n");
  EXPECT_EQ(s.TakeOutput(), "DATA\r\n");
  s.Feed("354 go\r\n");
  s.TakeOutput();
  s.Feed("250 ok\r\n");
  auto r = s.TakeResult();
  EXPECT_EQ(r->recipients[0].code, 451);
  EXPECT_TRUE(r->recipients[0].transient());
  EXPECT_EQ(r->recipients[1].code, 250);
}

TEST(ClientSessionTest, RejectedSenderFailsEveryRecipientAndResets) {
  ClientSession s = Ready();
  std::string body = "x\r\n";
  s.SendMessage(Message(&body));
  s.TakeOutput();
  s.Feed(
      "553 5.7.1 sender rejected\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need "
      "MAIL\r\n"
      "503 5.5.1 need MAIL\r\n");
  auto r = s.TakeResult();
  ASSERT_TRUE(r.has_value());
  for (const Reply& rep : r->recipients) EXPECT_EQ(rep.code, 553);
  EXPECT_EQ(s.TakeOutput(), "RSET\r\n");
  s.Feed("250 ok\r\n");
  EXPECT_EQ(s.phase(), Phase::kReady);
}

TEST(ClientSessionTest, AllRecipientsRejectedThenDataRefused) {
  ClientSession s = Ready();
  std::string body = "x\r\n";
  s.SendMessage(Message(&body));
  s.TakeOutput();
  s.Feed("250 ok\r\n550 no\r\n550 no\r\n554 5.5.1 no valid recipients\r\n");
  auto r = s.TakeResult();
  EXPECT_EQ(r->recipients[0].code, 550);
  EXPECT_EQ(s.TakeOutput(), "RSET\r\n");
}

TEST(ClientSessionTest, ChecksBeforeSending) {
  ClientSession s = Ready();
  std::string big(200000, 'x');
  s.SendMessage(Message(&big));
  auto r = s.TakeResult();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->recipients[0].code, 552);
  EXPECT_THAT(r->recipients[0].text, HasSubstr("limit of 100000"));
  EXPECT_EQ(s.TakeOutput(), "");  // Nothing sent.
  ClientSession plain = Ready(Plain(), "250-old\r\n250 PIPELINING\r\n");
  std::string body = "x\r\n";
  OutMessage utf8 = Message(&body);
  utf8.smtputf8 = true;
  plain.SendMessage(utf8);
  EXPECT_EQ(plain.TakeResult()->recipients[0].enhanced, "5.6.7");
  OutMessage eight = Message(&body);
  eight.eight_bit = true;
  plain.SendMessage(eight);
  EXPECT_EQ(plain.TakeResult()->recipients[0].enhanced, "5.6.3");
}

TEST(ClientSessionTest, StartTlsOpportunisticAndRequired) {
  ClientConfig c = Plain();
  c.tls = TlsPolicy::kOpportunistic;
  ClientSession s = Ready(c, "250-mx\r\n250-STARTTLS\r\n250 PIPELINING\r\n");
  EXPECT_EQ(s.TakeOutput(), "STARTTLS\r\n");
  s.Feed("220 2.0.0 go\r\n");
  EXPECT_EQ(s.phase(), Phase::kTlsHandshake);
  s.TlsStarted();
  EXPECT_TRUE(s.tls_active());
  EXPECT_EQ(s.TakeOutput(), "EHLO out.peregrine.test\r\n");
  s.Feed("250-mx\r\n250 PIPELINING\r\n");
  EXPECT_EQ(s.phase(), Phase::kReady);

  ClientSession refused = Ready(c, "250-mx\r\n250 STARTTLS\r\n");
  refused.TakeOutput();
  refused.Feed("454 4.7.0 TLS not available\r\n");
  EXPECT_EQ(refused.phase(), Phase::kReady);  // Opportunistic: in the clear.

  c.tls = TlsPolicy::kRequired;
  ClientSession required = Ready(c, "250-mx\r\n250 PIPELINING\r\n");
  EXPECT_EQ(required.phase(), Phase::kClosed);
  EXPECT_TRUE(required.failure().transient());
  EXPECT_THAT(required.failure().text, HasSubstr("TLS is required"));
}

TEST(ClientSessionTest, RepliesInjectedAfterStartTlsAreNotSmtp) {
  ClientConfig c = Plain();
  c.tls = TlsPolicy::kOpportunistic;
  ClientSession s = Ready(c, "250-mx\r\n250 STARTTLS\r\n");
  s.TakeOutput();
  // A man in the middle appends replies to the 220, in the clear.
  s.Feed("220 go\r\n250 2.0.0 injected\r\n");
  EXPECT_EQ(s.phase(), Phase::kTlsHandshake);
  EXPECT_EQ(s.TakeTlsBytes(), "250 2.0.0 injected\r\n");  // For TLS.
  EXPECT_EQ(s.TakeTlsBytes(), "");
  s.Feed("more");  // Still not read as SMTP.
  EXPECT_EQ(s.phase(), Phase::kTlsHandshake);
  s.TlsStarted();
  EXPECT_EQ(s.TakeOutput(), "EHLO out.peregrine.test\r\n");
}

TEST(ClientSessionTest, SmarthostAuthAndItsFailureDefers) {
  ClientConfig c = Plain();
  c.auth_user = "app";
  c.auth_password = "secret";
  ClientSession s = Ready(c, "250-relay\r\n250 AUTH LOGIN PLAIN\r\n");
  EXPECT_EQ(s.TakeOutput(), "AUTH PLAIN AGFwcABzZWNyZXQ=\r\n");
  s.Feed("235 2.7.0 ok\r\n");
  EXPECT_EQ(s.phase(), Phase::kReady);
  // Some servers (Postfix's smtp-sink) say 250: success too.
  ClientSession lenient = Ready(c, "250-relay\r\n250 AUTH PLAIN\r\n");
  lenient.TakeOutput();
  lenient.Feed("250 2.0.0 Ok\r\n");
  EXPECT_EQ(lenient.phase(), Phase::kReady);

  ClientSession bad = Ready(c, "250-relay\r\n250 AUTH PLAIN\r\n");
  bad.TakeOutput();
  bad.Feed("535 5.7.8 Username and Password not accepted\r\n");
  EXPECT_EQ(bad.phase(), Phase::kClosed);
  EXPECT_EQ(bad.failure().code, 451);  // Deferred, never bounced.
  EXPECT_THAT(bad.failure().text, HasSubstr("app password"));
}

TEST(ClientSessionTest, ClosingRepliesAndGarbage) {
  ClientSession greeting(Plain());
  greeting.Feed("421 4.3.2 busy, try later\r\n");
  EXPECT_EQ(greeting.phase(), Phase::kClosed);
  EXPECT_EQ(greeting.failure().code, 421);

  ClientSession mid = Ready();
  std::string body = "x\r\n";
  mid.SendMessage(Message(&body));
  mid.TakeOutput();
  mid.Feed("250 ok\r\n550 5.1.1 unknown\r\n421 4.4.2 closing\r\n");
  auto r = mid.TakeResult();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->recipients[0].code, 550);  // Final already: kept.
  EXPECT_EQ(r->recipients[1].code, 421);  // Unknown: the 421, transient.

  ClientSession junk(Plain());
  junk.Feed("HTTP/1.1 400 Bad Request\r\n");
  EXPECT_EQ(junk.phase(), Phase::kClosed);
  EXPECT_TRUE(junk.failure().transient());
  EXPECT_THAT(junk.failure().text, HasSubstr("malformed reply"));

  ClientSession mixed(Plain());
  mixed.Feed("220-one\r\n250 two\r\n");
  EXPECT_EQ(mixed.phase(), Phase::kClosed);

  ClientSession endless(Plain());
  endless.Feed(std::string(70000, 'x'));
  EXPECT_EQ(endless.phase(), Phase::kClosed);
}

TEST(ClientSessionTest, MultiLineRepliesAndQuit) {
  ClientSession s(Plain());
  s.Feed("220-first line\r\n220-second\r\n220 last\r\n");
  EXPECT_EQ(s.phase(), Phase::kHello);
  s.TakeOutput();
  s.Feed(kEhlo);
  s.Quit();
  EXPECT_EQ(s.TakeOutput(), "QUIT\r\n");
  s.Feed("221 2.0.0 bye\r\n");
  EXPECT_EQ(s.phase(), Phase::kClosed);
}

struct EncodeCase {
  std::string body;
  std::string wire;
};

TEST(ClientSessionTest, ChunkingSendsEnvelopeAndMessageInOneWrite) {
  ClientSession s = Ready(Plain(), kEhloChunking);
  ASSERT_TRUE(s.chunking());
  std::string body = "Subject: x\r\n\r\n.leading dot\r\n.\r\nend\r\n";
  s.SendMessage(Message(&body));
  // No dot-stuffing, no end-of-data line: the size says where it ends.
  EXPECT_EQ(s.TakeOutput(),
            "MAIL FROM:<bounce@sender.test> SIZE=36\r\n"
            "RCPT TO:<a@dest.test>\r\nRCPT TO:<b@dest.test>\r\n"
            "BDAT 36 LAST\r\n" +
                body);
  s.Feed("250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n");
  EXPECT_FALSE(s.TakeResult().has_value());
  s.Feed("250 2.0.0 queued as X\r\n");
  auto r = s.TakeResult();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->recipients[0].ToString(), "250 2.0.0 queued as X");
  EXPECT_EQ(r->recipients[1].ToString(), "550 5.1.1 no such user");
  // Clean: the next message needs no RSET.
  EXPECT_EQ(s.phase(), Phase::kReady);
  EXPECT_EQ(s.TakeOutput(), "");
}

TEST(ClientSessionTest, ChunkingConvertsBareLineEnds) {
  ClientSession s = Ready(Plain(), kEhloChunking);
  std::string body = "a\nb\rc";  // Bare LF, bare CR, no last line end.
  s.SendMessage(Message(&body, {"a@dest.test"}));
  EXPECT_THAT(s.TakeOutput(),
              ::testing::EndsWith("BDAT 9 LAST\r\na\r\nb\r\nc\r\n"));
  std::string out;
  EXPECT_EQ(ChunkContent("a\r\nb\r\n", &out), "a\r\nb\r\n");
  EXPECT_EQ(out, "");  // Already right: no copy.
  EXPECT_EQ(ChunkContent("", &out), "");
  EXPECT_EQ(ChunkContent("\r\r\n", &out), "\r\n\r\n");
}

TEST(ClientSessionTest, ChunkingRefusedMessageOrRecipientsThenReset) {
  std::string body = "Subject: x\r\n\r\nhi\r\n";
  {
    // Every RCPT refused: the server refuses the BDAT; the RCPT replies
    // stand, and the transaction is reset.
    ClientSession s = Ready(Plain(), kEhloChunking);
    s.SendMessage(Message(&body, {"a@dest.test"}));
    s.TakeOutput();
    s.Feed("250 ok\r\n550 5.1.1 unknown\r\n554 5.5.1 no valid recipients\r\n");
    auto r = s.TakeResult();
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->recipients[0].code, 550);
    EXPECT_EQ(s.TakeOutput(), "RSET\r\n");
    s.Feed("250 ok\r\n");
    EXPECT_EQ(s.phase(), Phase::kReady);
  }
  {
    // The message itself refused: its answer for the accepted ones.
    ClientSession s = Ready(Plain(), kEhloChunking);
    s.SendMessage(Message(&body, {"a@dest.test"}));
    s.TakeOutput();
    s.Feed("250 ok\r\n250 ok\r\n452 4.3.1 out of space\r\n");
    auto r = s.TakeResult();
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->recipients[0].ToString(), "452 4.3.1 out of space");
    EXPECT_EQ(s.TakeOutput(), "RSET\r\n");
  }
  {
    // Without PIPELINING, CHUNKING alone changes nothing: DATA.
    ClientSession s =
        Ready(Plain(), "250-mx\r\n250-8BITMIME\r\n250 CHUNKING\r\n");
    s.SendMessage(Message(&body, {"a@dest.test"}));
    EXPECT_EQ(s.TakeOutput(), "MAIL FROM:<bounce@sender.test>\r\n");
    s.Feed("250 ok\r\n");
    EXPECT_EQ(s.TakeOutput(), "RCPT TO:<a@dest.test>\r\n");
    s.Feed("250 ok\r\n");
    EXPECT_EQ(s.TakeOutput(), "DATA\r\n");
  }
}

TEST(EncodeDataContentTest, LineEndsBecomeCrlfAndDotsAreStuffed) {
  const EncodeCase cases[] = {
      {"", ".\r\n"},
      {"x", "x\r\n.\r\n"},
      {"x\r\n", "x\r\n.\r\n"},
      {"a\nb", "a\r\nb\r\n.\r\n"},
      {"a\rb", "a\r\nb\r\n.\r\n"},
      {"x\r", "x\r\n.\r\n"},
      {"\n\n", "\r\n\r\n.\r\n"},
      {"\r\r\n", "\r\n\r\n.\r\n"},
      {".", "..\r\n.\r\n"},
      {".\r\n.x\r\n", "..\r\n..x\r\n.\r\n"},
      // The smuggling sequences of BDAT content: the next hop sees a
      // stuffed dot on a line of its own, never an end of data.
      {"hello\r.\rMAIL FROM:<evil@x.test>\r\n",
       "hello\r\n..\r\nMAIL FROM:<evil@x.test>\r\n.\r\n"},
      {"hello\n.\nRCPT", "hello\r\n..\r\nRCPT\r\n.\r\n"},
      {"hello\r\n.\rX", "hello\r\n..\r\nX\r\n.\r\n"},
  };
  for (const EncodeCase& c : cases) {
    std::string out;
    EncodeDataContent(c.body, &out);
    EXPECT_EQ(out, c.wire) << absl::CEscape(c.body);
  }
}

TEST(EncodeDataContentTest, NoBareLineEndAndOneEndOfDataWhateverTheBody) {
  std::mt19937 rng(7);
  const char alphabet[] = {'\r', '\n', '.', 'a', ' '};
  for (int round = 0; round < 20000; ++round) {
    std::string body(rng() % 24, 'a');
    for (char& c : body) c = alphabet[rng() % sizeof(alphabet)];
    std::string out;
    EncodeDataContent(body, &out);
    for (size_t i = 0; i < out.size(); ++i) {
      if (out[i] == '\r') {
        ASSERT_TRUE(i + 1 < out.size() && out[i + 1] == '\n')
            << absl::CEscape(body);
      }
      if (out[i] == '\n') {
        ASSERT_TRUE(i > 0 && out[i - 1] == '\r') << absl::CEscape(body);
      }
    }
    // "\r\n.\r\n" (or a body that is only ".\r\n") ends the data: once.
    std::string framed = "\r\n" + out;
    ASSERT_EQ(framed.find("\r\n.\r\n"), framed.size() - 5)
        << absl::CEscape(body);
  }
}

}  // namespace
}  // namespace peregrine::smtp
