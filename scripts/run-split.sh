#!/usr/bin/env bash
# The split deployment on this machine: auth, ingest, two stream processes
# and certd as separate processes sharing the embedded store, the bus on
# tcp://, and an nginx gateway that gives clients one origin.
#
#   scripts/run-split.sh [flags for every service...]     (make run-split)
#
# Ports (env): GATEWAY_PORT (8080), then AUTH_PORT, INGEST_PORT, STREAM1_PORT,
# STREAM2_PORT, CERTD_PORT (8081..8085), BUS_INGEST_PORT (5556), BUS_AUTH_PORT
# (5557), BUS_CERTD_PORT (5558), BUS_STREAM1_PORT and BUS_STREAM2_PORT (8086,
# 8087: where each stream process tells the other who is online).
# DB (./db-split) is the shared store.  Runs until Ctrl-C / SIGTERM; with
# SPLIT_READY_FILE set, writes that file once every service answers /readyz.
# The bus is CURVE-authenticated and encrypted: a key pair per process
# (broker-keygen) in BUS_KEYS (default: a fresh folder for this run), every
# public key in BUS_KEYS/trusted; BUS_CURVE=0 runs the bus in the clear.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BROKER_BUILD:-$ROOT/build}
GATEWAY_PORT=${GATEWAY_PORT:-8080}
AUTH_PORT=${AUTH_PORT:-$((GATEWAY_PORT + 1))}
INGEST_PORT=${INGEST_PORT:-$((GATEWAY_PORT + 2))}
STREAM1_PORT=${STREAM1_PORT:-$((GATEWAY_PORT + 3))}
STREAM2_PORT=${STREAM2_PORT:-$((GATEWAY_PORT + 4))}
CERTD_PORT=${CERTD_PORT:-$((GATEWAY_PORT + 5))}
BUS_INGEST_PORT=${BUS_INGEST_PORT:-5556}
BUS_AUTH_PORT=${BUS_AUTH_PORT:-5557}
BUS_CERTD_PORT=${BUS_CERTD_PORT:-5558}
BUS_STREAM1_PORT=${BUS_STREAM1_PORT:-$((GATEWAY_PORT + 6))}
BUS_STREAM2_PORT=${BUS_STREAM2_PORT:-$((GATEWAY_PORT + 7))}
DB=${DB:-$ROOT/db-split}
RUN=$(mktemp -d /tmp/broker-split.XXXXXX)

pids=()
stop() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  status=0
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || status=1; done
  rm -rf "$RUN"
  exit $status
}
trap stop EXIT INT TERM

# One key pair per process; each binding socket trusts every public key of
# the deployment, each subscriber knows its publishers' public keys.
key() { :; }
peer_key() { :; }
if [ "${BUS_CURVE:-1}" != 0 ]; then
  KEYS=${BUS_KEYS:-$RUN/keys}
  mkdir -p "$KEYS/trusted"
  for name in certd auth ingest stream1 stream2; do
    [ -f "$KEYS/$name" ] || "$BIN/broker-keygen" "$KEYS/$name" >/dev/null
    cp "$KEYS/$name.pub" "$KEYS/trusted/$name.pub"
  done
  key() { echo "--bus_key_file=$KEYS/$1"; }
  peer_key() { echo "--bus_peer_keys=$KEYS/trusted/$1.pub"; }
  common_curve=(--bus_trusted_keys="$KEYS/trusted" --bus_certd_key="$KEYS/trusted/certd.pub")
  stream_curve=(--bus_server_key="$KEYS/trusted/ingest.pub,$KEYS/trusted/auth.pub")
else
  common_curve=() stream_curve=()
fi
common=(--db="$DB" --bind=127.0.0.1 --bus_control="tcp://127.0.0.1:$BUS_CERTD_PORT" ${common_curve[@]+"${common_curve[@]}"} "$@")
bus_sub="tcp://127.0.0.1:$BUS_INGEST_PORT,tcp://127.0.0.1:$BUS_AUTH_PORT"
"$BIN/broker-certd" $(key certd) "${common[@]}" --port="$CERTD_PORT" --bus_publish="tcp://127.0.0.1:$BUS_CERTD_PORT" & pids+=($!)
"$BIN/broker-auth" $(key auth) --trusted_proxies=127.0.0.1 "${common[@]}" --port="$AUTH_PORT" --bus_publish="tcp://127.0.0.1:$BUS_AUTH_PORT" & pids+=($!)
"$BIN/broker-ingest" $(key ingest) "${common[@]}" --port="$INGEST_PORT" --bus_publish="tcp://127.0.0.1:$BUS_INGEST_PORT" & pids+=($!)
# Each stream process binds an endpoint of its own for presence and hears the other's.
stream1_bus="tcp://127.0.0.1:$BUS_STREAM1_PORT" stream2_bus="tcp://127.0.0.1:$BUS_STREAM2_PORT"
"$BIN/broker-stream" $(key stream1) "${common[@]}" ${stream_curve[@]+"${stream_curve[@]}"} --port="$STREAM1_PORT" --bus_subscribe="$bus_sub" \
  --bus_publish="$stream1_bus" --bus_peers="$stream2_bus" $(peer_key stream2) & pids+=($!)
"$BIN/broker-stream" $(key stream2) "${common[@]}" ${stream_curve[@]+"${stream_curve[@]}"} --port="$STREAM2_PORT" --bus_subscribe="$bus_sub" \
  --bus_publish="$stream2_bus" --bus_peers="$stream1_bus" $(peer_key stream1) & pids+=($!)

sed -e "s|@PREFIX@|$RUN|g" -e "s|@LISTEN@|127.0.0.1:$GATEWAY_PORT|" \
    -e "s|@AUTH@|127.0.0.1:$AUTH_PORT|" -e "s|@INGEST@|127.0.0.1:$INGEST_PORT|" -e "s|@CERTD@|127.0.0.1:$CERTD_PORT|" \
    -e "s|@STREAMS@|server 127.0.0.1:$STREAM1_PORT; server 127.0.0.1:$STREAM2_PORT;|" \
    "$ROOT/deploy/gateway.conf.in" > "$RUN/nginx.conf"
mkdir -p "$RUN"/{body,proxy,fastcgi,uwsgi,scgi}
nginx -q -p "$RUN" -c "$RUN/nginx.conf" -g "user $(id -un);" 2>"$RUN/nginx.stderr" & pids+=($!)

# Ready once every service answers /readyz (bounded: 20 s).
for _ in $(seq 1 200); do
  ok=1
  for port in "$AUTH_PORT" "$INGEST_PORT" "$STREAM1_PORT" "$STREAM2_PORT" "$CERTD_PORT" "$GATEWAY_PORT"; do
    curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" || { ok=0; break; }
  done
  [ $ok = 1 ] && break
  sleep 0.1
done
if [ $ok != 1 ]; then echo "run-split: services did not become ready" >&2; cat "$RUN/nginx.stderr" >&2; exit 1; fi
echo "split deployment ready: gateway http://127.0.0.1:$GATEWAY_PORT (auth $AUTH_PORT, ingest $INGEST_PORT, stream $STREAM1_PORT and $STREAM2_PORT, certd $CERTD_PORT)"
[ -n "${SPLIT_READY_FILE:-}" ] && echo ready > "$SPLIT_READY_FILE"
wait -n "${pids[@]}" || true
echo "run-split: a service stopped; stopping the others" >&2
