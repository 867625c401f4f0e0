#include "mta/cluster/redis_blocking.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"

namespace peregrine::cluster {
namespace {

std::string SslError() {
  unsigned long e = ERR_get_error();
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return e == 0 ? std::string("the connection broke") : std::string(buf);
}

}  // namespace

absl::StatusOr<std::vector<absl::StatusOr<RedisValue>>> BlockingRedis(
    const RedisEndpoint& endpoint, const RedisOptions& options,
    const std::vector<std::vector<std::string>>& commands) {
  const std::string where = endpoint.address.ToString();
  int fd = socket(endpoint.address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(strerror(errno));
  absl::Cleanup close_fd = [fd] { close(fd); };
  int timeout_ms = static_cast<int>(absl::ToInt64Milliseconds(
      options.connect_timeout + options.command_timeout));
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (connect(fd, endpoint.address.sockaddr_ptr(), endpoint.address.length()) !=
      0) {
    return absl::UnavailableError(
        absl::StrCat("cannot connect to ", where, ": ", strerror(errno)));
  }
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(nullptr, SSL_free);
  if (options.tls != nullptr) {
    ssl.reset(SSL_new(options.tls->ctx()));
    SSL_set_fd(ssl.get(), fd);
    SSL_set_tlsext_host_name(ssl.get(), endpoint.host.c_str());
    if (options.tls_verify) {
      SSL_set_verify(ssl.get(), SSL_VERIFY_PEER, nullptr);
      X509_VERIFY_PARAM_set1_host(SSL_get0_param(ssl.get()),
                                  endpoint.host.c_str(), 0);
    }
    if (SSL_connect(ssl.get()) != 1) {
      long verify = SSL_get_verify_result(ssl.get());
      return absl::UnavailableError(absl::StrCat(
          where, ": TLS: ",
          verify != X509_V_OK ? X509_verify_cert_error_string(verify)
                              : SslError().c_str()));
    }
  }
  std::string request;
  if (!options.password.empty()) {
    std::vector<std::string> auth = {"AUTH"};
    if (!options.user.empty()) auth.push_back(options.user);
    auth.push_back(options.password);
    request += FormatCommand(auth);
  }
  for (const auto& c : commands) request += FormatCommand(c);
  auto write = [&](const char* p, size_t n) {
    return ssl ? SSL_write(ssl.get(), p, static_cast<int>(n))
               : static_cast<int>(send(fd, p, n, MSG_NOSIGNAL));
  };
  for (size_t done = 0; done < request.size();) {
    int n = write(request.data() + done, request.size() - done);
    if (n <= 0) {
      return absl::UnavailableError(absl::StrCat(where, ": write failed"));
    }
    done += n;
  }
  RespReader reader;
  std::vector<absl::StatusOr<RedisValue>> replies;
  bool auth_pending = !options.password.empty();
  char buf[16384];
  while (replies.size() < commands.size()) {
    auto next = reader.Next();
    if (!reader.error().empty()) {
      return absl::DataLossError(absl::StrCat(where, ": ", reader.error()));
    }
    if (!next.ok() || next->has_value()) {
      if (auth_pending) {
        auth_pending = false;
        if (!next.ok()) {
          return absl::PermissionDeniedError(
              absl::StrCat(where, ": AUTH refused: ", next.status().message()));
        }
        continue;
      }
      replies.push_back(next.ok() ? absl::StatusOr<RedisValue>(**next)
                                  : absl::StatusOr<RedisValue>(next.status()));
      continue;
    }
    int n = ssl ? SSL_read(ssl.get(), buf, sizeof(buf))
                : static_cast<int>(recv(fd, buf, sizeof(buf), 0));
    if (n <= 0) {
      return absl::UnavailableError(absl::StrCat(
          where, ": no answer (", n == 0 ? "closed" : strerror(errno), ")"));
    }
    reader.Feed(absl::string_view(buf, n));
  }
  return replies;
}

}  // namespace peregrine::cluster
