#!/usr/bin/env bash
# Start the ferretdb-fixture (MongoDB-wire test server) in the background.
#
# Usage: tests/ferretdb/start.sh PORT DIR
#   PORT  TCP port on 127.0.0.1 (0 = pick a free one; see DIR/ferretdb.addr)
#   DIR   state directory (created): data/ (SQLite files), ferretdb.pid,
#         ferretdb.log (server stderr), ferretdb.out (stdout), ferretdb.addr
# Env:   FERRETDB_FIXTURE  binary to use (default: built/cached by build.sh)
#        FERRETDB_LOG_LEVEL  debug|info|warn|error (default warn)
#        FERRETDB_START_TIMEOUT  seconds to wait for READY (default 30)
# On success prints mongodb://127.0.0.1:PORT/ on stdout and exits 0.
# On failure kills the server, shows the end of its log, exits 1.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "ferretdb/start.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ $# -eq 2 ] || die "usage: $0 PORT DIR"
port="$1"; dir="$2"
[[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -le 65535 ] || die "bad PORT '$port' (want 0..65535)"
timeout="${FERRETDB_START_TIMEOUT:-30}"
[[ "$timeout" =~ ^[0-9]+$ ]] || die "bad FERRETDB_START_TIMEOUT '$timeout'"

mkdir -p "$dir/data" || die "cannot create $dir/data"
dir="$(cd "$dir" && pwd)"
pidf="$dir/ferretdb.pid"; out="$dir/ferretdb.out"; errlog="$dir/ferretdb.log"; addrf="$dir/ferretdb.addr"

if [ -f "$pidf" ]; then
    old="$(cat "$pidf" 2>/dev/null || true)"
    if [[ "$old" =~ ^[0-9]+$ ]] && kill -0 "$old" 2>/dev/null \
        && tr '\0' ' ' < "/proc/$old/cmdline" 2>/dev/null | grep -q ferretdb-fixture; then
        die "a fixture is already running for $dir (pid $old); run stop.sh $dir first"
    fi
    rm -f "$pidf"   # stale
fi

bin="${FERRETDB_FIXTURE:-}"
if [ -z "$bin" ]; then
    bin="$("$here/build.sh" | tail -n 1)" || die "build.sh failed"
fi
[ -x "$bin" ] || die "fixture binary '$bin' is not executable"

rm -f "$out" "$addrf"
: > "$errlog"
"$bin" -dir "$dir/data" -listen "127.0.0.1:$port" -log-level "${FERRETDB_LOG_LEVEL:-warn}" \
    </dev/null >"$out" 2>>"$errlog" &
pid=$!

fail() {
    log "ERROR: $*"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    rm -f "$pidf"
    log "last lines of $errlog:"
    tail -n 20 "$errlog" >&2 || true
    exit 1
}

deadline=$(( $(date +%s) + timeout ))
addr=""
while :; do
    if line="$(grep -m1 '^READY ' "$out" 2>/dev/null)"; then
        addr="${line#READY }"; break
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null && rc=0 || rc=$?
        fail "fixture exited (status $rc) before READY (port $port busy? bad dir?)"
    fi
    [ "$(date +%s)" -lt "$deadline" ] || fail "no READY within ${timeout} s; killed pid $pid"
    sleep 0.1
done

echo "$pid" > "$pidf"
echo "$addr" > "$addrf"
log "started pid $pid on $addr (data $dir/data, log $errlog)"
echo "mongodb://$addr/"
