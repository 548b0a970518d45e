#!/usr/bin/env bash
# broker-mongo-offline's entrypoint: the FerretDB fixture on 127.0.0.1:27018
# (it refuses other addresses), socat forwarding 0.0.0.0:27017 to it.  Ready
# when the fixture says READY; SIGTERM (docker stop) stops socat, then the
# fixture cleanly (~2 s), and exits 0.
#   Env: MONGO_OFFLINE_DATA [/data/db], MONGO_OFFLINE_LOG_LEVEL [error: at warn the health
#   check's bare connections log a line each]
set -euo pipefail

data=${MONGO_OFFLINE_DATA:-/data/db}
inner=127.0.0.1:27018
log() { echo "mongo-offline: $*" >&2; }

fixture=0 forwarder=0
stop() {
  trap - TERM INT
  [ "$forwarder" = 0 ] || kill -TERM "$forwarder" 2>/dev/null || true
  [ "$fixture" = 0 ] || kill -TERM "$fixture" 2>/dev/null || true
  status=0
  [ "$fixture" = 0 ] || wait "$fixture" || status=$?
  [ "$forwarder" = 0 ] || wait "$forwarder" 2>/dev/null || true
  log "stopped (fixture status $status)"
  exit "$status"
}
trap stop TERM INT

ready=$(mktemp)
ferretdb-fixture -dir "$data" -listen "$inner" -log-level "${MONGO_OFFLINE_LOG_LEVEL:-error}" > "$ready" &
fixture=$!
for _ in $(seq 1 300); do
  grep -q '^READY ' "$ready" && break
  kill -0 "$fixture" 2>/dev/null || { wait "$fixture" || true; log "the fixture exited before READY"; exit 1; }
  sleep 0.1
done
grep -q '^READY ' "$ready" || { log "no READY within 30 s"; kill -TERM "$fixture"; exit 1; }
rm -f "$ready"

socat -lpwarn TCP-LISTEN:27017,bind=0.0.0.0,reuseaddr,fork,backlog=128 "TCP:$inner" &
forwarder=$!
log "ready: mongodb://<this container>:27017/ (FerretDB on SQLite, data in $data)"

# Whichever stops first stops the container (wait -n returns on a signal too).
wait -n "$fixture" "$forwarder" || true
log "the fixture or the forwarder stopped"
stop
