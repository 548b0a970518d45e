#!/usr/bin/env bash
# Stop a ferretdb-fixture started by start.sh.
#
# Usage: tests/ferretdb/stop.sh DIR
# Sends SIGTERM, waits up to FERRETDB_STOP_TIMEOUT seconds (default 20), then SIGKILL.
# Exits 0 if the server is stopped (or was not running), 1 on error.
set -euo pipefail

log() { echo "ferretdb/stop.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ $# -eq 1 ] || die "usage: $0 DIR"
dir="$1"
pidf="$dir/ferretdb.pid"
timeout="${FERRETDB_STOP_TIMEOUT:-20}"

if [ ! -f "$pidf" ]; then
    log "no $pidf: nothing to stop"
    exit 0
fi
pid="$(cat "$pidf")"
[[ "$pid" =~ ^[0-9]+$ ]] || die "bad pid '$pid' in $pidf"

if ! kill -0 "$pid" 2>/dev/null; then
    log "pid $pid is not running (stale pid file removed)"
    rm -f "$pidf"; exit 0
fi
# Guard against a recycled pid: only signal our fixture.
if ! tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q ferretdb-fixture; then
    log "pid $pid is not a ferretdb-fixture (stale pid file removed; nothing killed)"
    rm -f "$pidf"; exit 0
fi

kill -TERM "$pid" 2>/dev/null || true
end=$(( $(date +%s) + timeout ))
while kill -0 "$pid" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$end" ]; then
        log "pid $pid still running after ${timeout} s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
        break
    fi
    sleep 0.1
done
# A zombie (child of our own shell) counts as stopped.
if kill -0 "$pid" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then
    die "pid $pid could not be stopped"
fi
rm -f "$pidf"
log "stopped pid $pid"
