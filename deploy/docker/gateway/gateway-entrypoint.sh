#!/usr/bin/env bash
# The gateway container's entrypoint: renders nginx's configuration from the
# environment into a writable directory, in TLS mode installs a certificate
# (certd's, or a temporary self-signed one until certd has written one) and
# watches certd's files to reload nginx when they change, then becomes nginx
# (exec: nginx is PID 1 and gets `docker stop`'s SIGTERM itself).
#
# Environment (defaults in brackets):
#   BROKER_GATEWAY_TLS          on|off [off]: off serves everything on 8080;
#                               on serves clients on 8443 and 8080 answers
#                               ACME challenges and 308s the rest to https
#   BROKER_GATEWAY_AUTH, _INGEST, _STREAM, _CERTD
#                               host:port of each service [auth:8080, ...]
#   BROKER_GATEWAY_RESOLVER     DNS server for those names [127.0.0.11, Docker's]
#   BROKER_GATEWAY_CERTS        certd's certificate directory, read-only
#                               [/certs]: chain.pem and private_key.pem
#   BROKER_GATEWAY_SERVER_NAME  name in the temporary certificate [the first
#                               name of BROKER_DOMAIN, else localhost]
#   BROKER_GATEWAY_HTTPS_PORT   the public HTTPS port the 308 names [443]
#   BROKER_GATEWAY_RELOAD_INTERVAL  seconds between looks at the files [2]
#   BROKER_GATEWAY_ACCESS_LOG   on|off [on]: one line per request on stdout
#                               (the path without its query: no tokens)
#   BROKER_GATEWAY_LOG_LEVEL    nginx error log level on stderr [warn]
#   BROKER_GATEWAY_WORKERS      nginx worker processes [auto]
#   BROKER_GATEWAY_RUN          writable directory for nginx [/tmp/gateway]
#   BROKER_GATEWAY_SHARE        where the templates are [this script's directory]
# Arguments starting with - go to nginx; any other command (`docker run
# broker-gateway bash`) is run instead of the gateway.
set -euo pipefail

if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then exec "$@"; fi

SHARE=${BROKER_GATEWAY_SHARE:-$(dirname "$(readlink -f "$0")")}
TLS=${BROKER_GATEWAY_TLS:-off}
AUTH=${BROKER_GATEWAY_AUTH:-auth:8080}
INGEST=${BROKER_GATEWAY_INGEST:-ingest:8080}
STREAM=${BROKER_GATEWAY_STREAM:-stream:8080}
CERTD=${BROKER_GATEWAY_CERTD:-certd:8080}
RESOLVER=${BROKER_GATEWAY_RESOLVER:-127.0.0.11}
CERTS=${BROKER_GATEWAY_CERTS:-/certs}
HTTPS_PORT=${BROKER_GATEWAY_HTTPS_PORT:-443}
INTERVAL=${BROKER_GATEWAY_RELOAD_INTERVAL:-2}
ACCESS_LOG=${BROKER_GATEWAY_ACCESS_LOG:-on}
LOG_LEVEL=${BROKER_GATEWAY_LOG_LEVEL:-warn}
WORKERS=${BROKER_GATEWAY_WORKERS:-auto}
RUN=${BROKER_GATEWAY_RUN:-/tmp/gateway}
domain=${BROKER_DOMAIN:-}
NAME=${BROKER_GATEWAY_SERVER_NAME:-${domain%%,*}}
NAME=${NAME:-localhost}

log() { echo "gateway: $*" >&2; }
die() { log "$*"; exit 1; }

# Values go into nginx's configuration through sed: accept only what they
# should look like, so a typo fails here with the variable's name.
check() {  # check NAME VALUE REGEX
  [[ $2 =~ $3 ]] || die "bad $1='$2'"
}
for v in AUTH INGEST STREAM CERTD; do
  check "BROKER_GATEWAY_$v" "${!v}" '^[A-Za-z0-9._-]+:[0-9]+$'
done
check BROKER_GATEWAY_TLS "$TLS" '^(on|off)$'
check BROKER_GATEWAY_RESOLVER "$RESOLVER" '^[A-Za-z0-9.:_-]+( [A-Za-z0-9.:_-]+)*$'
check BROKER_GATEWAY_HTTPS_PORT "$HTTPS_PORT" '^[0-9]+$'
check BROKER_GATEWAY_RELOAD_INTERVAL "$INTERVAL" '^[0-9]+$'
check BROKER_GATEWAY_ACCESS_LOG "$ACCESS_LOG" '^(on|off)$'
check BROKER_GATEWAY_LOG_LEVEL "$LOG_LEVEL" '^(debug|info|notice|warn|error|crit)$'
check BROKER_GATEWAY_WORKERS "$WORKERS" '^(auto|[0-9]+)$'
check BROKER_GATEWAY_SERVER_NAME "$NAME" '^[A-Za-z0-9.-]+$'
[ "$INTERVAL" -ge 1 ] || INTERVAL=1

mkdir -p "$RUN"/{body,proxy,fastcgi,uwsgi,scgi,tls} || die "cannot write $RUN"
chmod 700 "$RUN/tls"

access="off"
[ "$ACCESS_LOG" = on ] && access="/dev/stdout broker"
suffix=""
[ "$HTTPS_PORT" = 443 ] || suffix=":$HTTPS_PORT"
render() {  # render TEMPLATE OUTPUT
  sed -e "s|@RUN@|$RUN|g" -e "s|@WORKERS@|$WORKERS|" -e "s|@ERROR_LOG_LEVEL@|$LOG_LEVEL|" \
      -e "s|@ACCESS_LOG@|$access|" -e "s|@RESOLVER@|$RESOLVER|" \
      -e "s|@AUTH@|$AUTH|" -e "s|@INGEST@|$INGEST|" -e "s|@STREAM@|$STREAM|" -e "s|@CERTD@|$CERTD|" \
      -e "s|@CERTS@|$CERTS|g" -e "s|@SHARE@|$SHARE|g" -e "s|@HTTPS_PORT_SUFFIX@|$suffix|" "$1" > "$2.tmp"
  mv -f "$2.tmp" "$2"
}
render "$SHARE/nginx.conf.in" "$RUN/nginx.conf"
nginx=(nginx -p "$RUN" -c "$RUN/nginx.conf")

if [ "$TLS" = off ]; then
  render "$SHARE/server-plain.conf.in" "$RUN/servers.conf"
  log "plain HTTP on 8080: auth $AUTH, ingest $INGEST, stream $STREAM, certd $CERTD (resolver $RESOLVER)"
  exec "${nginx[@]}" "$@"
fi

render "$SHARE/server-tls.conf.in" "$RUN/servers.conf"

# What identifies certd's pair on disk: mtime, size and inode of both files
# (certd writes each whole and renames it into place: a new inode).
certs_state() {
  stat -c '%Y.%s.%i' "$CERTS/chain.pem" "$CERTS/private_key.pem" 2>/dev/null | tr '\n' ' ' || true
}
# Copy a pair into $RUN/tls if it is one: the certificate parses and its
# public key is the key's.  nginx only ever reads a verified copy, so a pair
# caught between certd's two renames never reaches it.
install_pair() {  # install_pair CHAIN KEY
  local cpub kpub
  cpub=$(openssl x509 -noout -pubkey -in "$1" 2>/dev/null | sha256sum) || return 1
  kpub=$(openssl pkey -pubout -in "$2" 2>/dev/null | sha256sum) || return 1
  [ -n "$cpub" ] && [ "$cpub" = "$kpub" ] || return 1
  (umask 077 && cp "$2" "$RUN/tls/private_key.pem.new" && cp "$1" "$RUN/tls/chain.pem.new") || return 1
  mv -f "$RUN/tls/private_key.pem.new" "$RUN/tls/private_key.pem"
  mv -f "$RUN/tls/chain.pem.new" "$RUN/tls/chain.pem"
}
install_selfsigned() {
  local d="$RUN/selfsigned"
  mkdir -p "$d"
  (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
      -subj "/CN=$NAME" -addext "subjectAltName=DNS:$NAME" \
      -keyout "$d/private_key.pem" -out "$d/chain.pem" 2>/dev/null) || die "openssl could not make a temporary certificate"
  install_pair "$d/chain.pem" "$d/private_key.pem" || die "cannot install the temporary certificate"
}

applied=$(certs_state)
if [ -n "$applied" ] && install_pair "$CERTS/chain.pem" "$CERTS/private_key.pem"; then
  log "TLS on 8443 with certd's certificate ($CERTS)"
else
  [ -n "$applied" ] && log "$CERTS/chain.pem and private_key.pem are not a pair (yet)"
  install_selfsigned
  log "TLS on 8443 with a temporary self-signed certificate for $NAME until certd writes $CERTS/chain.pem"
fi
log "8080: ACME challenges to certd $CERTD, the rest 308 to https; clients on 8443: auth $AUTH, ingest $INGEST, stream $STREAM (resolver $RESOLVER)"

# The watcher: a change is applied once both files have stayed the same for
# one interval; a reload is graceful (old workers finish their streams).
watch_certs() {
  local last="$applied" now
  while sleep "$INTERVAL"; do
    now=$(certs_state)
    if [ "$now" != "$last" ]; then last=$now; continue; fi
    [ "$now" = "$applied" ] && continue
    applied=$now
    if [ -n "$now" ] && install_pair "$CERTS/chain.pem" "$CERTS/private_key.pem"; then
      if "${nginx[@]}" -s reload 2>/dev/null; then
        log "certd's certificate changed: reloaded ($(openssl x509 -noout -enddate -in "$RUN/tls/chain.pem" 2>/dev/null))"
      else
        log "certd's certificate changed but nginx -s reload failed"
      fi
    else
      log "$CERTS changed but holds no matching chain.pem/private_key.pem pair: keeping the current certificate"
    fi
  done
}
watch_certs &
exec "${nginx[@]}" "$@"
