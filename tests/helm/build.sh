#!/usr/bin/env bash
# Builds the two programs of the Helm chart's tests into a cache directory
# outside the repository, so repeated test and CI runs reuse them:
#   helm        Helm itself (helm.sh/helm/v4/cmd/helm, the version pinned in
#               checker/go.mod), from the Go module proxy
#   chartcheck  checker/main.go: rendered manifests decoded strictly into the
#               Kubernetes API's Go types (k8s.io/api, the version Helm uses)
# Both come from one Go module (checker/), so they share one set of
# Kubernetes libraries.  Rebuilt only when checker/main.go, go.mod, go.sum,
# this script's build settings or the Go version changed (a sha256 stamp
# next to the binaries).
#
# Usage: tests/helm/build.sh
# Env:   BROKER_CACHE  cache root (default: $HOME/.cache/broker)
#        GO            go binary (default: go on PATH, else /usr/local/go/bin/go)
#        GOPROXY etc.  passed through to go as usual
# Output: progress on stderr; the directory holding helm and chartcheck as
# the LAST line of stdout.
# Test tools only: Go is never used by the product.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module="$here/checker"
cache="${BROKER_CACHE:-${HOME:-/root}/.cache/broker}"
dir="$cache/helm-tools"
stamp="$dir/stamp"

log() { echo "helm/build.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

GO="${GO:-}"
if [ -z "$GO" ]; then
    if command -v go >/dev/null 2>&1; then GO="$(command -v go)"
    elif [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go
    else die "no Go toolchain found (set GO=/path/to/go)"; fi
fi
[ -x "$GO" ] || command -v "$GO" >/dev/null 2>&1 || die "GO=$GO is not executable"

# Never download another toolchain; take go.mod and go.sum as they are
# (-mod=mod lets go fetch the modules go.sum lists from GOPROXY).
export GOTOOLCHAIN=local
export GOFLAGS="-mod=mod"
export CGO_ENABLED=0
helm_version="$(sed -n 's/^[[:space:]]*helm\.sh\/helm\/v4 \(v[^ ]*\).*/\1/p' "$module/go.mod")"
[ -n "$helm_version" ] || die "checker/go.mod does not require helm.sh/helm/v4"
# helm --version prints what its Makefile would stamp in.
ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$helm_version"

mkdir -p "$dir"

want="$( {
    cat "$module/main.go" "$module/go.mod" "$module/go.sum"
    "$GO" version
    echo "ldflags=$ldflags cgo=$CGO_ENABLED trimpath"
} | sha256sum | cut -d' ' -f1 )"

# One build at a time (parallel test jobs).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$dir/lock"
    flock -w 900 9 || die "timed out waiting for the build lock $dir/lock"
fi

if [ -x "$dir/helm" ] && [ -x "$dir/chartcheck" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    log "up to date: $dir (helm $helm_version)"
    echo "$dir"
    exit 0
fi

log "building helm $helm_version and chartcheck into $dir (the first build downloads the modules and compiles Helm: minutes)"
start=$(date +%s)
rm -f "$stamp"
tmp="$(mktemp -d "$dir/build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
( cd "$module" &&
  "$GO" build -buildvcs=false -trimpath -ldflags "$ldflags" -o "$tmp/chartcheck" . &&
  "$GO" build -buildvcs=false -trimpath -ldflags "$ldflags" -o "$tmp/helm" helm.sh/helm/v4/cmd/helm ) >&2 \
    || die "go build failed (GOPROXY=${GOPROXY:-$("$GO" env GOPROXY)})"
mv -f "$tmp/chartcheck" "$dir/chartcheck"
mv -f "$tmp/helm" "$dir/helm"
echo "$want" > "$stamp"
log "built in $(( $(date +%s) - start )) s: $dir"
echo "$dir"
