#include "tls/tls.h"

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace peregrine::tls {
namespace {

std::string TempDir(const std::string& name) {
  std::string dir = absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name);
  return dir;
}

struct Pair {
  std::unique_ptr<TlsSession> client, server;
  absl::Status client_status, server_status;
};

// Moves bytes between the two sides until neither has anything to say.
void Shuttle(Pair& p) {
  for (int round = 0; round < 20; ++round) {
    std::string to_server = p.client->TakeCiphertext();
    std::string plaintext;
    if (!to_server.empty() && p.server_status.ok()) {
      p.server_status = p.server->Feed(to_server, &plaintext);
    }
    std::string to_client = p.server->TakeCiphertext();
    if (!to_client.empty() && p.client_status.ok()) {
      p.client_status = p.client->Feed(to_client, &plaintext);
    }
    if (to_server.empty() && to_client.empty()) return;
  }
}

class TlsClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto files = EnsureSelfSigned(TempDir("certs"), "mx.example.test");
    ASSERT_TRUE(files.ok()) << files.status();
    crt_ = files->first;
    auto server = ServerContext::FromFiles(files->first, files->second);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *server;
  }

  Pair Handshake(std::shared_ptr<const ClientContext> ctx,
                 const std::string& host, bool verify) {
    Pair p;
    p.client = TlsSession::Client(ctx, host, verify);
    p.server = TlsSession::Server(server_);
    p.client_status = p.client->Begin();
    Shuttle(p);
    return p;
  }

  std::string crt_;
  std::shared_ptr<const ServerContext> server_;
};

TEST_F(TlsClientTest, OpportunisticTakesAnyCertificateAndSaysSo) {
  auto ctx = ClientContext::Create();
  ASSERT_TRUE(ctx.ok());
  Pair p = Handshake(*ctx, "mx.example.test", /*verify=*/false);
  ASSERT_TRUE(p.client_status.ok()) << p.client_status;
  EXPECT_TRUE(p.client->handshake_done());
  std::string why;
  EXPECT_FALSE(p.client->Verified(&why));
  EXPECT_NE(why.find("self-signed"), std::string::npos) << why;
  // Data flows both ways.
  ASSERT_TRUE(p.client->Write("EHLO me\r\n").ok());
  std::string got;
  ASSERT_TRUE(p.server->Feed(p.client->TakeCiphertext(), &got).ok());
  EXPECT_EQ(got, "EHLO me\r\n");
}

TEST_F(TlsClientTest, VerifyFailsOnAnUntrustedCertificate) {
  auto ctx = ClientContext::Create();
  ASSERT_TRUE(ctx.ok());
  Pair p = Handshake(*ctx, "mx.example.test", /*verify=*/true);
  EXPECT_FALSE(p.client_status.ok());
  EXPECT_FALSE(p.client->handshake_done());
}

TEST_F(TlsClientTest, VerifyChecksTheHostName) {
  auto ctx = ClientContext::Create(crt_);  // Trust the test certificate.
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  Pair good = Handshake(*ctx, "mx.example.test", /*verify=*/true);
  ASSERT_TRUE(good.client_status.ok()) << good.client_status;
  EXPECT_TRUE(good.client->handshake_done());
  EXPECT_TRUE(good.client->Verified());
  Pair wrong = Handshake(*ctx, "other.example.test", /*verify=*/true);
  EXPECT_FALSE(wrong.client_status.ok());
}

TEST_F(TlsClientTest, UnreadableCaFileIsAClearError) {
  auto ctx = ClientContext::Create("/nonexistent/ca.pem");
  ASSERT_FALSE(ctx.ok());
  EXPECT_NE(ctx.status().message().find("/nonexistent/ca.pem"),
            std::string::npos);
}

}  // namespace
}  // namespace peregrine::tls
