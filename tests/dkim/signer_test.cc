#include "dkim/signer.h"

#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peregrine::dkim {
namespace {

using ::testing::HasSubstr;

// RFC 8463 Appendix A (the RFC 6376 Appendix A message).
constexpr char kRfcMessage[] =
    "From: Joe SixPack <joe@football.example.com>\r\n"
    "To: Suzie Q <suzie@shopping.example.net>\r\n"
    "Subject: Is dinner ready?\r\n"
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    "\r\n"
    "Hi.\r\n"
    "\r\n"
    "We lost the game. Are you hungry yet?\r\n"
    "\r\n"
    "Joe.\r\n";

TEST(Rfc8463Test, Ed25519SignatureMatchesThePublishedOne) {
  std::string seed;
  ASSERT_TRUE(absl::Base64Unescape(
      "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=", &seed));
  auto key = PrivateKey::FromEd25519Seed(seed);
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ((*key)->PublicKeyBase64(),
            "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");
  EXPECT_EQ(
      (*key)->DnsRecord(),
      "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");

  SplitMessage split = Split(kRfcMessage);
  EXPECT_EQ(BodyHashBase64(split.body, Canon::kRelaxed),
            "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=");
  EXPECT_EQ(BodyHashBase64(split.body, Canon::kSimple),
            "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=");
  // The field exactly as the RFC signed it, b= empty.
  const std::string field =
      "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
      " d=football.example.com; i=@football.example.com;\r\n"
      " q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
      " subject : date : message-id : from : subject : date;\r\n"
      " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
      " b=";
  std::vector<std::string> h = {"from",       "to",   "subject", "date",
                                "message-id", "from", "subject", "date"};
  auto sig = (*key)->Sign(HeaderHashInput(split, h, field, Canon::kRelaxed));
  ASSERT_TRUE(sig.ok());
  EXPECT_EQ(
      Base64(*sig),
      "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5Os"
      "U7ZbnKELq+eXdp1Q1Dw==");
}

// The field with folding and spaces removed, to compare tag text.
std::string Flat(const std::string& field) {
  return absl::StrReplaceAll(field, {{"\r\n\t", ""}, {" ", ""}});
}

std::shared_ptr<const PrivateKey> Ed25519() {
  static auto key = *PrivateKey::Generate(KeyType::kEd25519);
  return key;
}

TEST(SignerTest, OversignsAndListsEveryOccurrence) {
  std::string message =
      "Received: x\r\nFrom: a@example.com\r\nTo: b@example.net\r\n"
      "To: c@example.net\r\nSubject: s\r\nX-Mailer: m\r\n\r\nbody\r\n";
  auto signer = Signer::Create({"example.com", "sel"}, Ed25519());
  ASSERT_TRUE(signer.ok());
  auto field = signer->Sign(message, absl::FromUnixSeconds(1700000000));
  ASSERT_TRUE(field.ok());
  std::string flat = Flat(*field);
  EXPECT_THAT(flat, HasSubstr("h=From:From:Subject:Subject:Date:To:To:To:"
                              "List-Unsubscribe:Message-ID;"));
  EXPECT_THAT(flat, HasSubstr("a=ed25519-sha256;c=relaxed/relaxed;"
                              "d=example.com;s=sel;t=1700000000;"));
  EXPECT_THAT(flat, ::testing::Not(HasSubstr("x=")));
  EXPECT_THAT(flat, ::testing::Not(HasSubstr("Received")));
  EXPECT_THAT(flat, ::testing::Not(HasSubstr("X-Mailer")));
  EXPECT_TRUE(absl::EndsWith(*field, "\r\n"));
  for (absl::string_view line : absl::StrSplit(*field, "\r\n")) {
    EXPECT_LE(line.size(), 78u) << line;
  }
}

TEST(SignerTest, ExpirationIdentityAndFromAlwaysSigned) {
  SignerOptions options{"example.com", "s2024"};
  options.expiration = absl::Hours(24 * 7);
  options.identity = "@news.example.com";
  options.headers = {"Subject"};  // From is added: RFC 6376 §5.4.
  options.oversign = {};
  options.header_canon = Canon::kSimple;
  auto signer = Signer::Create(options, Ed25519());
  ASSERT_TRUE(signer.ok());
  auto field = signer->Sign("From: a@example.com\r\nSubject: x\r\n\r\n",
                            absl::FromUnixSeconds(1000));
  ASSERT_TRUE(field.ok());
  std::string flat = Flat(*field);
  EXPECT_THAT(flat, HasSubstr("c=simple/relaxed;"));
  EXPECT_THAT(flat, HasSubstr("t=1000;x=605800;i=@news.example.com;"));
  EXPECT_THAT(flat, HasSubstr("h=From:Subject;"));
}

TEST(SignerTest, RejectsBadNames) {
  EXPECT_FALSE(Signer::Create({"exa mple.com", "s"}, Ed25519()).ok());
  EXPECT_FALSE(Signer::Create({"example.com", ""}, Ed25519()).ok());
  EXPECT_FALSE(Signer::Create({"example.com", "s;x"}, Ed25519()).ok());
  EXPECT_FALSE(Signer::Create({".example.com", "s"}, Ed25519()).ok());
  EXPECT_TRUE(Signer::Create({"mail.example.com", "k_1.2024"}, Ed25519()).ok());
  EXPECT_FALSE(Signer::Create({"example.com", "s"}, nullptr).ok());
}

std::string WriteFile(const std::string& name, const std::string& text) {
  std::string path = std::string(getenv("TEST_TMPDIR")) + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(KeyTest, LoadsWhatItWritesAndReportsBadFiles) {
  auto rsa = PrivateKey::Generate(KeyType::kRsa, 1024);
  ASSERT_TRUE(rsa.ok());
  EXPECT_EQ((*rsa)->bits(), 1024);
  EXPECT_EQ((*rsa)->algorithm(), "rsa-sha256");
  auto loaded = PrivateKey::LoadPemFile(WriteFile("rsa.pem", (*rsa)->ToPem()));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->PublicKeyBase64(), (*rsa)->PublicKeyBase64());
  EXPECT_TRUE(absl::StartsWith((*rsa)->DnsRecord(), "v=DKIM1; k=rsa; p=MIGf"));

  auto missing = PrivateKey::LoadPemFile("/nonexistent/k.pem");
  EXPECT_TRUE(absl::IsNotFound(missing.status()));
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr("/nonexistent/k.pem: cannot read"));

  auto garbage = PrivateKey::LoadPemFile(WriteFile("garbage.pem", "hello"));
  EXPECT_TRUE(absl::IsInvalidArgument(garbage.status()));
  EXPECT_THAT(std::string(garbage.status().message()),
              HasSubstr("not a PEM private key"));

  // A public key is not a signing key.
  std::string pub = "-----BEGIN PUBLIC KEY-----\n" + (*rsa)->PublicKeyBase64() +
                    "\n-----END PUBLIC KEY-----\n";
  EXPECT_FALSE(PrivateKey::LoadPemFile(WriteFile("pub.pem", pub)).ok());

  EXPECT_FALSE(PrivateKey::Generate(KeyType::kRsa, 512).ok());
  EXPECT_FALSE(PrivateKey::Generate(KeyType::kRsa, 8192).ok());
}

TEST(KeyTest, RefusesKeysThatCannotSignDkim) {
  EVP_PKEY* ec = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  ASSERT_NE(ec, nullptr);
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, ec, nullptr, nullptr, 0, nullptr, nullptr);
  char* data;
  long n = BIO_get_mem_data(bio, &data);
  std::string pem(data, n);
  BIO_free(bio);
  EVP_PKEY_free(ec);
  auto key = PrivateKey::FromPem(pem, "ec.pem");
  EXPECT_FALSE(key.ok());
  EXPECT_THAT(std::string(key.status().message()),
              HasSubstr("cannot sign DKIM; use RSA (2048 bits) or Ed25519"));

  EVP_PKEY* small = EVP_RSA_gen(768);
  bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, small, nullptr, nullptr, 0, nullptr, nullptr);
  n = BIO_get_mem_data(bio, &data);
  pem.assign(data, n);
  BIO_free(bio);
  EVP_PKEY_free(small);
  key = PrivateKey::FromPem(pem, "small.pem");
  EXPECT_FALSE(key.ok());
  EXPECT_THAT(std::string(key.status().message()), HasSubstr("768 bits"));
}

// Found by dkim_key_fuzz: an RSA key whose parts do not fit together
// parsed and passed every check, and then could not sign: the daemon would
// have held that domain's mail. It is refused at load now.
TEST(KeyTest, AKeyThatCannotSignIsRefusedAtLoad) {
  auto key = PrivateKey::LoadPemFile("tests/dkim/testdata/damaged_rsa.pem");
  ASSERT_FALSE(key.ok());
  EXPECT_THAT(std::string(key.status().message()),
              HasSubstr("the key cannot sign"));
  EXPECT_THAT(std::string(key.status().message()),
              HasSubstr("peregrine dkim keygen"));
}

TEST(KeyTest, TxtRecordsSplitAt255Bytes) {
  std::string value(600, 'a');
  std::string quoted = QuoteTxt(value);
  std::vector<std::string> parts = absl::StrSplit(quoted, "\" \"");
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0].size(), 1u + 255u);  // With its opening quote.
  EXPECT_EQ(QuoteTxt("v=DKIM1"), "\"v=DKIM1\"");
}

}  // namespace
}  // namespace peregrine::dkim
