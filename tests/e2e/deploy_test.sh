#!/usr/bin/env bash
# The example configuration shipped in deploy/ must always pass `config check`.
set -euo pipefail
mta/peregrine config check deploy/peregrine.example.toml
