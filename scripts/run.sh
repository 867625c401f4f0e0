#!/usr/bin/env bash
# Installs what is missing, builds Peregrine (optimized) and runs
# `peregrine serve` in the foreground. With no arguments it uses the built-in
# defaults: SMTP on 127.0.0.1:2525 (relay), :2587 (submission), :2465
# (implicit TLS), admin HTTP on 127.0.0.1:8025, queue in ./peregrine-data.
# Arguments go to `peregrine serve`, e.g. --config FILE --data-dir DIR.
# Ctrl-C (SIGINT) or SIGTERM drains and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
bazel build -c opt //mta:peregrine
# Started as root, Peregrine wants a user to become (server.user); this
# trial run on loopback ports says root on purpose unless told otherwise.
user=()
if [ "$(id -u)" -eq 0 ] && [[ " $* " != *" --config "* && " $* " != *" -c "* &&
  " $* " != *" --user "* ]]; then
  user=(--user root)
fi
exec bazel-bin/mta/peregrine serve "${user[@]}" "$@"
