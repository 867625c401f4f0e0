#!/usr/bin/env bash
# Installs the Debian packages Peregrine needs to build, test and run, by
# name, from Debian's archive. Idempotent: installs only what is missing.
# Needs root (or sudo). Debian 12 (bookworm).
set -euo pipefail

PACKAGES=(
  # Build: Bazel from Debian, offline (see ../shared/bazel-offline.md).
  bazel-bootstrap bazel-rules-java g++ pkg-config
  # Libraries.
  liburing-dev librocksdb-dev libc-ares-dev libabsl-dev libssl-dev
  libtomlplusplus-dev libcli11-dev libre2-dev nlohmann-json3-dev
  # Bounce and feedback-report parsing (MIME).
  libgmime-3.0-dev
  # The admin port's HTTP/1.1 request framing (mta/http), and the mustache
  # templates of HTTP injection (mta/inject.h).
  libhttp-parser-dev libmstch-dev
  # Webhooks POST events with libcurl (mta/outcome/webhook.h).
  libcurl4-openssl-dev
  # TLS reports (RFC 8460) are gzipped with zlib.
  zlib1g-dev
  # Readiness, status and the watchdog under systemd (sd_notify).
  libsystemd-dev
  # Tests and benchmarks.
  libgtest-dev libgmock-dev googletest libbenchmark-dev python3
  # The benchmark suite's throughput plot (bench/e2e_runner.py).
  gnuplot-nox
  # DKIM signatures are checked by an independent verifier, dkimpy.
  python3-dkim openssl
  # `doctor`'s certificate checks are tested with certificates made by
  # python3-cryptography (an expired one among them).
  python3-cryptography
  # The container image: umoci writes it, skopeo and umoci check it, podman
  # runs it where the machine lets it; the Kubernetes manifests are read
  # with python3-yaml; systemd-analyze checks the unit.
  umoci skopeo podman python3-yaml systemd
  # The admin port's /metrics is parsed by the Prometheus client library
  # and scraped by a Prometheus server the test starts on loopback.
  python3-prometheus-client prometheus curl
  # The admin port's status page is loaded in headless Chromium.
  chromium
  # libFuzzer targets run briefly in the test suite.
  clang libclang-rt-14-dev
  # A real SMTP client for the end-to-end tests (with TLS support).
  swaks libnet-ssleay-perl
  # Postfix only for its smtp-source load generator and smtp-sink
  # destination (see below).
  postfix
  # The library the unpacked Exim needs (see the end of this script).
  libidn12
  # Resolver tests run an authoritative DNS server of their own on loopback.
  nsd
  # The DANE test signs a zone (ldns-signzone) and validates it with a
  # resolver of its own (unbound), in a network namespace.
  ldnsutils unbound
  # Many nodes share limits through Redis: the tests run redis-server on a
  # loopback port of their own and use redis-cli.
  redis-server redis-tools
  # The Redis client (mta/cluster) parses and formats RESP with hiredis.
  libhiredis-dev
  # The delivery test on built-in defaults runs in a network namespace of
  # its own (unshare, ip); the full-disk test mounts a small ext4 image.
  util-linux iproute2 mount e2fsprogs
  # The system trust store, for delivery.tls = "verify".
  ca-certificates
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then
    SUDO="sudo"
  else
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
fi

install_missing() {
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Postfix is installed for smtp-source only: "No configuration" leaves it
# unconfigured, so it does not become this machine's mail server.
if [[ " ${missing[*]} " == *" postfix "* ]]; then
  echo "postfix postfix/main_mailer_type select No configuration" |
    $SUDO debconf-set-selections
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}
if [ ${#missing[@]} -gt 0 ]; then
  install_missing
  # Installing unbound starts it as this machine's resolver, and
  # redis-server as a service; the tests run their own. Stop the ones the
  # packages started (only when just installed).
  for service in unbound redis-server; do
    [[ " ${missing[*]} " == *" $service "* ]] || continue
    if [ -d /run/systemd/system ]; then
      $SUDO systemctl disable --now "$service" >/dev/null 2>&1 || true
    else
      $SUDO service "$service" stop >/dev/null 2>&1 || true
    fi
  done
fi

# Exim, for real bounces made by a second MTA in the tests
# (tests/e2e/bounce/async_bounce_test.py). It cannot be installed beside
# Postfix (both are the system's MTA), so its package is unpacked, not
# installed, into a folder of its own; the test runs it from there with
# its own configuration, user and spool.
EXIM_DIR=/opt/peregrine-test/exim
if [ ! -x "$EXIM_DIR/usr/sbin/exim4" ]; then
  echo "install-deps: unpacking exim4-daemon-light into $EXIM_DIR" >&2
  tmp=$(mktemp -d)
  chmod 755 "$tmp"
  if (cd "$tmp" && { $SUDO apt-get download -qq exim4-daemon-light ||
      { $SUDO apt-get update -qq &&
        $SUDO apt-get download -qq exim4-daemon-light; }; } >&2); then
    $SUDO mkdir -p "$EXIM_DIR"
    for deb in "$tmp"/*.deb; do $SUDO dpkg -x "$deb" "$EXIM_DIR"; done
  else
    # Only one test needs it: say so, and let everything else go on.
    echo "install-deps: could not download exim4-daemon-light; the Exim" \
      "case of tests/e2e/bounce/async_bounce_test will fail" >&2
  fi
  rm -rf "$tmp"
fi
