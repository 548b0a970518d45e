#!/usr/bin/env bash
# Broker vs Nchan vs Mercure on this machine (`make bench`). Thin wrapper: see bench/run.py --help.
#   bench/run.sh [--quick] [--workloads W1,W2a,W2b,W2c,W3,W4,W1-TLS,W2b-TLS] [--systems broker,nchan,mercure]
#   bench/run.sh --tls [--quick]    only the HTTPS rows (W1-TLS, W2b-TLS)
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_COMMAND="${BENCH_COMMAND:-bench/run.sh${*:+ $*}}"
exec python3 bench/run.py "$@"
