#!/usr/bin/env bash
# Installs what is missing and runs the whole test suite (unit, end-to-end,
# and a one-shot smoke run of every benchmark) with Bazel, offline; then the
# unit and end-to-end tests again under AddressSanitizer and
# UndefinedBehaviorSanitizer (`--config=asan`, in an output base of its own
# so the two builds do not evict each other).
# Ends with a line "N passed, N failed" (Bazel test targets, both passes)
# and exits non-zero when any test failed or did not build.
# Extra arguments go to `bazel test` and skip the sanitizer pass, e.g. a
# narrower pattern: scripts/test.sh //tests/mta/...
# PEREGRINE_ASAN=0 skips the sanitizer pass of a full run.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh || { echo "0 passed, 1 failed"; exit 1; }

# Every package, listed by top-level folder rather than as //...: a
# bazel-* link left by a run with another output base (the sanitizer pass
# below uses one) would otherwise be read as a folder of packages.
packages() {
  local d
  for d in */; do
    d=${d%/}
    case "$d" in bazel-*) continue ;; esac
    case " $* " in *" $d "*) continue ;; esac
    [ -n "$(find "$d" -name BUILD.bazel -print -quit)" ] && echo "//$d/..."
  done
}

targets=("$@")
asan=${PEREGRINE_ASAN:-1}
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(packages)
else
  asan=0
fi

log=$(mktemp)
trap 'rm -f "$log" "$log.asan"' EXIT

# Bazel's summary: one line per test target, e.g.
#   //tests/mta:config_test      PASSED in 0.1s
#   //tests/mta:cli_test         (cached) PASSED in 0.0s
#   //tests/x:y                  FAILED in 2.0s | FAILED TO BUILD | TIMEOUT | NO STATUS
count() {
  passed=$((passed + $(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$1")))
  local f
  f=$(grep -cE '^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|NO STATUS|FLAKY|INCOMPLETE)' "$1")
  # A build or analysis error can stop Bazel before it lists any test.
  if [ "$2" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  failed=$((failed + f))
}
passed=0
failed=0

bazel test --keep_going "${targets[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
count "$log" "$rc"

if [ "$asan" = 1 ]; then
  echo "== the tests again under AddressSanitizer + UndefinedBehaviorSanitizer"
  # Every package but the benchmarks (timings mean nothing under ASan; they
  # run above), the fuzz targets (built with ASan by themselves) and the
  # container image's test (it checks packaging, and an ASan binary run
  # under chroot without /proc reports false errors).
  mapfile -t patterns < <(packages bench third_party tools)
  base="$(bazel info output_base 2>/dev/null)-asan"
  bazel --output_base="$base" test --config=asan --symlink_prefix=/ \
    --keep_going -- "${patterns[@]}" -//tests/fuzz/... \
    -//tests/e2e/deploy:image_test 2>&1 | tee "$log.asan"
  asan_rc=${PIPESTATUS[0]}
  count "$log.asan" "$asan_rc"
  # Its server would hold a few hundred MB until it times out.
  bazel --output_base="$base" shutdown >/dev/null 2>&1
  [ "$asan_rc" -ne 0 ] && rc=$asan_rc
fi

echo "${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ] && [ "$rc" -eq 0 ]
