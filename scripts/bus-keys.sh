#!/usr/bin/env bash
# Makes the bus keys of a split deployment (`make bus-keys`): a CURVE key pair
# per service with broker-keygen, and the public keys the binding sockets
# trust, as a directory and as one file (a single Docker secret).
#
#   scripts/bus-keys.sh [DIR [NAME...]]
#
# DIR (default deploy/bus-keys) gets NAME (the pair, mode 0600) and NAME.pub
# for every NAME (default: bus bus2 certd auth ingest stream, the services of
# docker-compose.yml; replicas of a service share its pair), trusted/ with
# every NAME.pub, and trusted.keys with every public key.  A pair that
# exists is kept: run it again after adding a NAME.  For a rotation: rename
# trusted/NAME.pub (the old key stays trusted meanwhile), move the pair away,
# run it again, restart that service, then delete the renamed .pub and run it
# again (trusted.keys follows trusted/).
#
# Env: BROKER_BUILD  binaries [build]
#      BUS_KEYS_OWNER  uid[:gid] to give the files to (root only), e.g.
#                   10001:10001, the images' user, which must read its pair
#                   when compose mounts it as a secret
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KEYGEN=${BROKER_BUILD:-$ROOT/build}/broker-keygen
DIR=${1:-$ROOT/deploy/bus-keys}
[ $# -gt 0 ] && shift
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(bus bus2 certd auth ingest stream)
[ -x "$KEYGEN" ] || { echo "bus-keys: $KEYGEN is missing (make build)" >&2; exit 1; }

mkdir -p "$DIR/trusted"
for n in "${names[@]}"; do
  case $n in *[!A-Za-z0-9_.-]*|.*) echo "bus-keys: bad name '$n'" >&2; exit 1 ;; esac
  [ -f "$DIR/$n" ] || "$KEYGEN" "$DIR/$n" >/dev/null
  cp "$DIR/$n.pub" "$DIR/trusted/$n.pub"
done
# trusted.keys is rewritten in place, not replaced: compose mounts it as a
# secret, a bind mount of the file's inode, and the forwarders re-read it at
# every handshake, so a key added or removed reaches them without a restart.
cat "$DIR"/trusted/*.pub > "$DIR/trusted.keys.new"
cat "$DIR/trusted.keys.new" > "$DIR/trusted.keys"
rm -f "$DIR/trusted.keys.new"
if [ -n "${BUS_KEYS_OWNER:-}" ]; then
  chown -R "$BUS_KEYS_OWNER" "$DIR"
fi
echo "bus-keys: ${#names[@]} key pairs in $DIR (trusted/ and trusted.keys: their public keys)"
