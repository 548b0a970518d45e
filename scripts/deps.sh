#!/usr/bin/env bash
# Installs the Debian packages Broker needs to build, run and test, if any is
# missing.  Safe to run again: it does nothing when everything is there.
#   scripts/deps.sh          build + run dependencies
#   scripts/deps.sh test     also what the tests need
#   scripts/deps.sh split    also what `make run-split` needs (nginx)
#   scripts/deps.sh bench    also what the benchmarks need
set -euo pipefail

pkgs=(cmake make gcc pkg-config libulfius-dev libjwt-dev libjansson-dev libargon2-dev
      libmongoc-dev libzmq3-dev libsqlite3-dev libmicrohttpd-dev libyder-dev liborcania-dev
      uuid-dev libssl-dev libcurl4-gnutls-dev)
case "${1:-}" in
  test) pkgs+=(python3 python3-pytest python3-requests python3-yaml python3-jsonschema clang libclang-rt-14-dev curl nginx-light chromium
              chromium-driver python3-selenium python3-zmq nodejs node-react node-react-test-renderer systemd
              prometheus pebble chrony faketime debootstrap)
        # npm (npm pack, the JS client's package test) comes with some nodejs builds and is
        # Debian's own package with Debian's nodejs.
        command -v npm >/dev/null 2>&1 || pkgs+=(npm) ;;
  split) pkgs+=(nginx-light curl) ;;
  bench) pkgs+=(python3 nginx libnginx-mod-nchan wrk curl) ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
