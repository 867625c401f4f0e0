#!/bin/bash
# Runs a benchmark binary once, briefly, as a smoke test.
set -euo pipefail
bin="$1"
shift
exec "$bin" --benchmark_min_time=0.01 "$@"
