#!/usr/bin/env bash
# Build the ferretdb-fixture test server (embedded FerretDB v1, SQLite handler)
# into a cache directory outside the repository, so repeated test/CI runs
# reuse it. Rebuilds only when main.go, go.mod, go.sum, this script's build
# settings or the Go version changed (sha256 stamp next to the binary).
#
# Usage: tests/ferretdb/build.sh
# Env:   BROKER_CACHE  cache root (default: $HOME/.cache/broker)
#        GO            go binary (default: go on PATH, else /usr/local/go/bin/go)
#        GOPROXY etc.  passed through to go as usual
# Output: progress on stderr; the binary's absolute path as the LAST line of stdout.
# Test fixture only: Go is never used by the product.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${BROKER_CACHE:-${HOME:-/root}/.cache/broker}"
bin="$cache/ferretdb-fixture"
stamp="$bin.stamp"

log() { echo "ferretdb/build.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

GO="${GO:-}"
if [ -z "$GO" ]; then
    if command -v go >/dev/null 2>&1; then GO="$(command -v go)"
    elif [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go
    else die "no Go toolchain found (set GO=/path/to/go)"; fi
fi
[ -x "$GO" ] || command -v "$GO" >/dev/null 2>&1 || die "GO=$GO is not executable"

# Never try to download another toolchain; use go.mod/go.sum as given
# (-mod=mod lets go fetch modules listed in go.sum from GOPROXY).
export GOTOOLCHAIN=local
export GOFLAGS="-mod=mod"
export CGO_ENABLED=0          # modernc.org/sqlite is pure Go
tags="ferretdb_no_postgresql" # only the sqlite handler is needed
ldflags="-s -w"

mkdir -p "$cache"

want="$( {
    cat "$here/main.go" "$here/go.mod" "$here/go.sum"
    "$GO" version
    echo "tags=$tags ldflags=$ldflags cgo=$CGO_ENABLED"
} | sha256sum | cut -d' ' -f1 )"

# Serialize concurrent builds (parallel test jobs) when flock is available.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache/ferretdb-fixture.lock"
    flock -w 900 9 || die "timed out waiting for build lock $cache/ferretdb-fixture.lock"
fi

if [ -x "$bin" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    log "up to date: $bin"
    echo "$bin"
    exit 0
fi

log "building $bin (first build downloads modules and compiles FerretDB + SQLite: a few minutes)"
start=$(date +%s)
tmp="$(mktemp "$cache/ferretdb-fixture.tmp.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
( cd "$here" && "$GO" build -buildvcs=false -trimpath -tags "$tags" -ldflags "$ldflags" -o "$tmp" . ) >&2 \
    || die "go build failed (GOPROXY=${GOPROXY:-$("$GO" env GOPROXY)})"
chmod 755 "$tmp"
mv -f "$tmp" "$bin"
trap - EXIT
echo "$want" > "$stamp"
log "built in $(( $(date +%s) - start )) s: $bin"
echo "$bin"
