#!/usr/bin/env bash
# Makes the secrets of the compose deployment (`make secrets`; `make images`
# runs it too): docker-compose.yml mounts each of them as a Docker secret, a
# file under /run/secrets/ that the services read through the _file flags, so
# that no secret is in an environment variable (docker inspect, /proc/*/environ
# and every child process show those).
#
#   scripts/compose-secrets.sh [DIR]
#
# DIR (default deploy/secrets; docker-compose.yml reads BROKER_SECRETS) gets
#   admin_token   the admin endpoints' password (random)
#   jwt_secret    the JWT signing key (random)
#   store_uri     the MongoDB URI (mongodb://mongo:27017/broker: the compose
#                 network's own server; put credentials here for another)
#   bus/          the bus's CURVE key pairs and trusted keys (scripts/bus-keys.sh)
# A file that exists is kept: edit it to choose a value, delete it for a new
# one (README, "Security of the split deployment", for rotations).
#
# The services run as the images' user (10001), and compose without swarm
# mounts a secret's file as it is, owner and mode included: as root the
# files go to SECRETS_OWNER (default 10001:10001), mode 0600; otherwise
# they are made readable (0644) inside DIR, which only its owner may enter.
#
# Env: BROKER_BUILD   binaries [build] (broker-keygen)
#      SECRETS_OWNER  uid[:gid] to give the files to, as root [10001:10001]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${1:-$ROOT/deploy/secrets}

umask 077
mkdir -p "$DIR"
chmod 700 "$DIR"

# 32 random bytes as 64 hex digits: safe in a file, a URL and a shell.
random_secret() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; echo; }

made=()
for name in admin_token jwt_secret; do
  if [ ! -s "$DIR/$name" ]; then random_secret > "$DIR/$name"; made+=("$name"); fi
done
if [ ! -s "$DIR/store_uri" ]; then echo "mongodb://mongo:27017/broker" > "$DIR/store_uri"; made+=(store_uri); fi
"$ROOT/scripts/bus-keys.sh" "$DIR/bus" >/dev/null

if [ "$(id -u)" = 0 ]; then
  chown -R "${SECRETS_OWNER:-10001:10001}" "$DIR"
  chown root "$DIR"  # the folder stays root's: only the files are the services' to read
else
  # Not root: the files cannot change owner, so the images' user reads them
  # as "others"; the folder (0700) still keeps the host's other users out.
  find "$DIR" -type f -exec chmod 644 {} +
  find "$DIR" -mindepth 1 -type d -exec chmod 755 {} +
fi
echo "secrets: $DIR${made[*]:+ (new: ${made[*]})}; bus keys in $DIR/bus"
