// DKIM benchmarks.
//
//   bazel run -c opt //bench/dkim:dkim_bench -- --benchmark_format=json
//
// BM_Sign/<algorithm>: whole signatures (parse, canonicalize, hash, sign)
//   over a 10 KiB message. Counters: signs_per_s; raw_signs_per_s, OpenSSL's
//   EVP_DigestSign on 32 bytes with the same key, measured in the same run;
//   ratio_vs_raw = signs_per_s / raw_signs_per_s.
// BM_CanonHash/<canon>: body canonicalization + SHA-256 over a 1 MiB body of
//   mail-like text. Counter mb_per_s (MiB/s).
#include <openssl/evp.h>

#include <chrono>
#include <string>

#include "absl/time/clock.h"
#include "benchmark/benchmark.h"
#include "dkim/signer.h"

namespace peregrine::dkim {
namespace {

// Mail-like text: words, runs of spaces, tabs, some trailing white space.
std::string MailText(size_t bytes) {
  std::string out;
  uint64_t x = 88172645463325252ull;
  size_t line = 0;
  while (out.size() < bytes) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    size_t word = 2 + x % 9;
    for (size_t i = 0; i < word; ++i)
      out += static_cast<char>('a' + (x >> (i * 3)) % 26);
    line += word;
    if (line > 70) {
      out += (x & 7) == 0 ? "  \r\n" : "\r\n";
      line = 0;
    } else {
      out += (x & 15) == 0 ? "  " : (x & 31) == 1 ? "\t" : " ";
    }
  }
  return out;
}

std::string Message(size_t body_bytes) {
  return "From: Joe <joe@example.com>\r\nTo: Suzie <suzie@example.net>\r\n"
         "Subject: The weekly digest\r\nDate: Sun, 22 Nov 2026 10:00:00 "
         "+0000\r\n"
         "Message-ID: <digest.1@example.com>\r\nMIME-Version: 1.0\r\n"
         "Content-Type: text/plain; charset=utf-8\r\n"
         "List-Unsubscribe: <https://example.com/u/1>\r\n\r\n" +
         MailText(body_bytes);
}

double RawSignsPerSecond(const PrivateKey& key, absl::Duration for_at_least) {
  unsigned char data[32] = {1, 2, 3};
  std::string sig(EVP_PKEY_get_size(key.pkey()), '\0');
  int n = 0;
  absl::Time start = absl::Now();
  absl::Time end;
  do {
    for (int i = 0; i < 16; ++i, ++n) {
      EVP_MD_CTX* ctx = EVP_MD_CTX_new();
      size_t len = sig.size();
      EVP_DigestSignInit(ctx, nullptr,
                         key.type() == KeyType::kRsa ? EVP_sha256() : nullptr,
                         nullptr, key.pkey());
      EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                     data, sizeof(data));
      EVP_MD_CTX_free(ctx);
    }
    end = absl::Now();
  } while (end - start < for_at_least);
  return n / absl::ToDoubleSeconds(end - start);
}

void BM_Sign(benchmark::State& state) {
  KeyType type = state.range(0) == 0 ? KeyType::kRsa : KeyType::kEd25519;
  auto key = PrivateKey::Generate(type, 2048);
  auto signer = Signer::Create({"example.com", "s1"}, *key);
  if (!key.ok() || !signer.ok()) {
    state.SkipWithError("no key");
    return;
  }
  std::string message = Message(10 * 1024);
  absl::Time now = absl::FromUnixSeconds(1795000000);
  auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    auto field = signer->Sign(message, now);
    benchmark::DoNotOptimize(field);
  }
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  double ours = state.iterations() / seconds;
  double raw = RawSignsPerSecond(**key, absl::Seconds(seconds));
  state.SetLabel(std::string((*key)->algorithm()));
  state.counters["signs_per_s"] = ours;
  state.counters["raw_signs_per_s"] = raw;
  state.counters["ratio_vs_raw"] = ours / raw;
}
BENCHMARK(BM_Sign)->ArgName("ed25519")->Arg(0)->Arg(1)->Unit(
    benchmark::kMicrosecond);

void BM_CanonHash(benchmark::State& state) {
  Canon canon = state.range(0) == 0 ? Canon::kRelaxed : Canon::kSimple;
  std::string body = MailText(1 << 20);
  for (auto _ : state) {
    BodyHasher hasher(canon);
    hasher.Update(body);
    benchmark::DoNotOptimize(hasher.Finish());
  }
  state.SetLabel(canon == Canon::kRelaxed ? "relaxed" : "simple");
  state.SetBytesProcessed(state.iterations() *
                          static_cast<int64_t>(body.size()));
  state.counters["mb_per_s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * body.size() / (1 << 20),
      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_CanonHash)
    ->ArgName("simple")
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace peregrine::dkim
