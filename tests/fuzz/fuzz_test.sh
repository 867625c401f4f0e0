#!/bin/bash
# Builds each libFuzzer target with clang (ASan + libFuzzer, from Debian's
# clang and libclang-rt-14-dev) and runs it briefly on a seed corpus. A
# crash, a sanitizer report or a broken invariant fails the test.
#
# For a long campaign: FUZZ_RUNS=10000000 runs each target that many times
# (instead of FUZZ_SECONDS each), FUZZ_ONLY="config_fuzz reception_fuzz"
# picks targets, FUZZ_DIR keeps the corpora between campaigns.
set -euo pipefail
seconds="${FUZZ_SECONDS:-10}"
only="${FUZZ_ONLY:-}"
limit=(-max_total_time="$seconds")
if [[ -n "${FUZZ_RUNS:-}" ]]; then limit=(-runs="$FUZZ_RUNS"); fi
work="${FUZZ_DIR:-${TEST_TMPDIR:-$(mktemp -d)}}"
libs=$(pkg-config --libs absl_strings absl_status absl_statusor absl_str_format \
  absl_time absl_synchronization absl_hash absl_raw_hash_set absl_random_random)
flags=(-std=c++20 -O1 -g -fsanitize=fuzzer,address -I.)

run() {
  local name=$1; shift
  if [[ -n "$only" && " $only " != *" $name "* ]]; then return; fi
  local bin="$work/$name"
  clang++ "${flags[@]}" "$@" -o "$bin" $libs
  mkdir -p "$work/$name-corpus"
  "$bin" "${limit[@]}" -max_len=4096 -timeout=10 \
      "$work/$name-corpus" tests/fuzz/seeds/$name 2>&1 | tail -n 3
}

run server_session_fuzz tests/fuzz/server_session_fuzz.cc mta/smtp/server_session.cc
# The admin port's HTTP request framing (Debian's http-parser).
run http_request_fuzz tests/fuzz/http_request_fuzz.cc mta/http/server_session.cc \
  -lhttp_parser
# HTTP injection's JSON requests and the messages rendered from them
# (mustache templates through Debian's libmstch, MIME).
run inject_fuzz -fexceptions tests/fuzz/inject_fuzz.cc mta/inject.cc \
  mta/submission.cc -lmstch
run client_session_fuzz tests/fuzz/client_session_fuzz.cc mta/smtp/client_session.cc \
  base/reply.cc
run dns_message_fuzz tests/fuzz/dns_message_fuzz.cc dns/message.cc
run dkim_key_fuzz tests/fuzz/dkim_key_fuzz.cc dkim/key.cc base/files.cc \
  -lcrypto
# toml++ as the daemon uses it: Debian's shared library (built with NDEBUG),
# not instantiated here with its internal assertions.
run config_fuzz -DTOML_HEADER_ONLY=0 -DTOML_SHARED_LIB=1 \
  tests/fuzz/config_fuzz.cc mta/config.cc mta/config_values.cc \
  mta/config_reception.cc mta/config_storage.cc mta/config_delivery.cc \
  mta/config_bounce.cc mta/config_local.cc mta/config_cluster.cc \
  mta/bounce/category.cc mta/outcome/outcome.cc \
  base/reply.cc dns/message.cc dkim/canonicalize.cc dkim/key.cc \
  dkim/signer.cc dkim/signing_table.cc \
  mta/delivery/policy.cc mta/delivery/shaping.cc mta/shard/address.cc \
  mta/shard/epoll_backend.cc mta/shard/uring_backend.cc \
  base/log.cc base/files.cc -ltomlplusplus -lcrypto -lre2 -luring
# Whole connections through the reception driver, fake backend and clock.
run reception_fuzz tests/fuzz/reception_fuzz.cc mta/reception.cc mta/listener.cc \
  mta/signer.cc \
  mta/stream/stream.cc \
  mta/submission.cc mta/smtp/server_session.cc mta/shard/reactor.cc \
  mta/shard/connection.cc mta/shard/address.cc mta/shard/socket.cc \
  mta/delivery/routing.cc queue/codec.cc base/reply.cc tls/tls.cc \
  dkim/canonicalize.cc \
  dkim/key.cc dkim/signer.cc dkim/signing_table.cc base/log.cc \
  base/files.cc dns/caching_resolver.cc dns/message.cc \
  mta/local/local_mail.cc mta/local/aliases.cc mta/local/srs.cc \
  mta/transfer_header.cc -lssl -lcrypto
# Bounce rule files (TOML, RE2) and remote replies through the classifier.
run bounce_rules_fuzz -DTOML_HEADER_ONLY=0 -DTOML_SHARED_LIB=1 \
  tests/fuzz/bounce_rules_fuzz.cc mta/bounce/classifier.cc \
  mta/bounce/category.cc mta/bounce/default_rules.cc base/reply.cc \
  -ltomlplusplus -lre2
# Bounces and complaints that come back by mail (GMime), VERP addresses and
# suppression CSV lines.
run bounce_report_fuzz -DTOML_HEADER_ONLY=0 -DTOML_SHARED_LIB=1 \
  $(pkg-config --cflags gmime-3.0) tests/fuzz/bounce_report_fuzz.cc \
  mta/bounce/report.cc mta/bounce/verp.cc mta/bounce/suppression.cc \
  mta/bounce/classifier.cc mta/bounce/category.cc \
  mta/bounce/default_rules.cc base/reply.cc queue/codec.cc \
  -ltomlplusplus -lre2 -lcrypto $(pkg-config --libs gmime-3.0)
run json_writer_fuzz tests/fuzz/json_writer_fuzz.cc mta/outcome/json_writer.cc
run queue_selection_fuzz tests/fuzz/queue_selection_fuzz.cc \
  mta/queue_actions.cc mta/outcome/outcome.cc mta/bounce/category.cc \
  queue/codec.cc base/reply.cc
# sendmail.cc brings the configuration (for its daemon address) along.
run sendmail_fuzz -DTOML_HEADER_ONLY=0 -DTOML_SHARED_LIB=1 \
  $(pkg-config --cflags gmime-3.0) tests/fuzz/sendmail_fuzz.cc \
  mta/sendmail.cc mta/blocking_smtp.cc mta/config.cc mta/config_values.cc \
  mta/config_reception.cc mta/config_storage.cc mta/config_delivery.cc \
  mta/config_bounce.cc mta/config_local.cc mta/config_cluster.cc \
  mta/bounce/category.cc mta/outcome/outcome.cc \
  base/reply.cc dns/message.cc dkim/canonicalize.cc dkim/key.cc \
  dkim/signer.cc dkim/signing_table.cc mta/delivery/policy.cc \
  mta/delivery/shaping.cc mta/shard/address.cc mta/shard/epoll_backend.cc \
  mta/shard/uring_backend.cc mta/listener.cc mta/shard/reactor.cc \
  mta/shard/connection.cc mta/shard/socket.cc base/log.cc base/files.cc \
  -ltomlplusplus -lssl -lcrypto -lre2 -luring $(pkg-config --libs gmime-3.0)
# Own domains: aliases files and SRS addresses (mta/local/).
run local_fuzz tests/fuzz/local_fuzz.cc mta/local/aliases.cc mta/local/srs.cc \
  -lcrypto
# SPF records as DNS gives them, evaluated by `peregrine doctor`.
run spf_fuzz -fexceptions tests/fuzz/spf_fuzz.cc mta/doctor/spf.cc dns/message.cc
# MTA-STS policies and records, as any web or DNS server sends them, and
# TLS-RPT records and the report made from a receiver's words.
run mta_sts_fuzz -fexceptions tests/fuzz/mta_sts_fuzz.cc \
  mta/delivery/mta_sts.cc mta/delivery/tls_report.cc
# What Redis (or whatever answers in its place) sends the cluster: RESP
# replies read as the events stream (pauses, suppressions).
run cluster_events_fuzz tests/fuzz/cluster_events_fuzz.cc \
  mta/cluster/events.cc mta/cluster/resp.cc mta/bounce/suppression.cc \
  mta/bounce/category.cc -lhiredis
# X-Peregrine-Transfer in any client's message (queue transfer).
run transfer_header_fuzz tests/fuzz/transfer_header_fuzz.cc \
  mta/transfer_header.cc
echo "fuzzing done"
