#!/bin/bash
# Runs a benchmark binary once, briefly, as a smoke test. Fails if it fails,
# or if its filter matched no benchmark (Google Benchmark exits 0 then).
set -uo pipefail
bin="$1"
shift
out=$("$bin" --benchmark_min_time=0.01 "$@" 2>&1)
rc=$?
echo "$out"
if [ "$rc" -ne 0 ]; then
  exit "$rc"
fi
if ! grep -q '^BM_' <<<"$out"; then
  echo "bench_smoke: no benchmark ran (filter matched nothing?)" >&2
  exit 1
fi
