#!/usr/bin/env bash
# Installs what is missing and runs the whole test suite (unit, end-to-end,
# and a one-shot smoke run of every benchmark) with Bazel, offline.
# Ends with a line "N passed, N failed" (Bazel test targets) and exits
# non-zero when any test failed or did not build. Extra arguments go to
# `bazel test`, e.g. a narrower pattern: scripts/test.sh //tests/mta/...
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh || { echo "0 passed, 1 failed"; exit 1; }

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(//...)

log=$(mktemp)
bazel test --keep_going "${targets[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

# Bazel's summary: one line per test target, e.g.
#   //tests/mta:config_test      PASSED in 0.1s
#   //tests/mta:cli_test         (cached) PASSED in 0.0s
#   //tests/x:y                  FAILED in 2.0s | FAILED TO BUILD | TIMEOUT | NO STATUS
passed=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$log")
failed=$(grep -cE '^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|NO STATUS|FLAKY|INCOMPLETE)' "$log")
rm -f "$log"

# A build or analysis error can stop Bazel before it lists any test.
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1
fi
echo "${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ] && [ "$rc" -eq 0 ]
