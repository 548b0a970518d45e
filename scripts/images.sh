#!/usr/bin/env bash
# Builds the docker images of the compose deployment (`make images` runs
# `make build` first, then this):
#   broker:latest                every binary, one image for every service
#   broker-gateway:latest        nginx, the one public origin
#   broker-mongo-offline:latest  the tests' FerretDB fixture as a MongoDB
#                                stand-in, for machines that cannot pull mongo
# from deploy/docker/Dockerfile*, each with a small build context staged here
# (the binaries and files it needs, not the repository).
#
#   scripts/images.sh [broker] [gateway] [mongo-offline]     (default: all)
#
# The base, debian:bookworm-slim: used as it is when present (pulled by a user
# who can).  When absent, made here without any registry: debootstrap
# (minbase) from the Debian mirror with every package the Dockerfiles install
# already in, cleaned, and loaded with `docker import` under that name, so
# the same Dockerfiles build offline (their install step finds nothing
# missing).  The root file system is cached as a tarball under
# $BROKER_CACHE (keyed by the package list), so after a `docker system
# prune -a` the base comes back by import, without debootstrap.
#
# Env: BROKER_BUILD     binaries [build]
#      BROKER_CACHE     cache root [~/.cache/broker] (also tests/ferretdb/build.sh's)
#      DEBIAN_MIRROR    [the first URIs of /etc/apt/sources.list.d/debian.sources,
#                       else http://deb.debian.org/debian]
#      DEBIAN_SECURITY_MIRROR  [that file's debian-security URI, else
#                       http://deb.debian.org/debian-security]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BROKER_BUILD:-$ROOT/build}
CACHE=${BROKER_CACHE:-${HOME:-/root}/.cache/broker}
DOCKER_DIR=$ROOT/deploy/docker
BASE=debian:bookworm-slim
SUITE=bookworm
# Bump when the way the base is made changes: it is part of the cache key.
BASE_RECIPE=1

log() { echo "images: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s; }
start_all=$(now)
# Temporary directories to remove on exit, however the script ends.
cleanup_paths=()
cleanup() { [ ${#cleanup_paths[@]} -eq 0 ] || rm -rf "${cleanup_paths[@]}"; }
trap cleanup EXIT

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(broker gateway mongo-offline)
for t in "${targets[@]}"; do
  case $t in broker|gateway|mongo-offline) ;; *) die "unknown image '$t' (broker, gateway, mongo-offline)" ;; esac
done

command -v docker >/dev/null 2>&1 || die "docker is not installed (Debian: apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "the docker daemon does not answer (is it running? may this user use it?): $(docker info 2>&1 | tail -n 1)"
# The classic builder: docker CLIs from 23 on build with BuildKit by default,
# which needs the buildx plugin (missing on the project's machines: the CLI
# then refuses to build) and may ask the registry for the FROM image even
# when it is here.  The classic builder uses the local image as it is.
export DOCKER_BUILDKIT=0

# Every runtime package of every image: the RUNTIME_PACKAGES="..." that opens
# each Dockerfile's RUN line.  The offline base has them all, so no image build needs
# the network.
runtime_packages() {
  sed -n 's/^RUN RUNTIME_PACKAGES="\([^"]*\)".*$/\1/p' "$DOCKER_DIR"/Dockerfile "$DOCKER_DIR"/Dockerfile.gateway \
      "$DOCKER_DIR"/Dockerfile.mongo-offline | tr ' ' '\n' | sed '/^$/d' | sort -u
}

# The mirrors: this host's own apt sources (it reaches them), else Debian's.
sources_uri() {  # sources_uri PATTERN: the first URIs line matching it
  sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | grep -m1 -E "$1" || true
}
MIRROR=${DEBIAN_MIRROR:-$(sources_uri '/debian/?$')}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-$(sources_uri 'debian-security/?$')}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}

# --- the base --------------------------------------------------------------

# Cleans a debootstrapped tree the way the slim image is: no apt lists or
# caches, no documentation but the copyrights, no man pages or translations,
# and dpkg told to keep it so.
slim_rootfs() {  # slim_rootfs DIR
  local d=$1
  cat > "$d/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
# As Debian's slim images: no documentation but the copyrights.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
  cat > "$d/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
APT::Install-Recommends "false";
EOF
  find "$d/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  find "$d/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
  rm -rf "$d"/usr/share/man/* "$d"/usr/share/groff/* "$d"/usr/share/info/* "$d"/usr/share/lintian/* \
         "$d"/usr/share/linda/* "$d"/usr/share/locale/*
  rm -rf "$d"/var/lib/apt/lists/* "$d"/var/cache/apt/* "$d"/var/cache/debconf/*-old "$d"/var/lib/dpkg/*-old \
         "$d"/tmp/* "$d"/var/tmp/* "$d"/root/.bash_history
  find "$d/var/log" -type f -delete
  # Docker provides these at run time.
  : > "$d/etc/resolv.conf"; : > "$d/etc/hostname"; : > "$d/etc/machine-id"
}

# debootstrap into a temporary directory, bring it up to date with the
# security and updates suites (debootstrap knows one suite), slim it, and
# write the tarball.  About a minute and a half on the project's 2-core
# machine, once per package list.
make_rootfs() {  # make_rootfs TARBALL PACKAGE...
  local tarball=$1; shift
  command -v debootstrap >/dev/null 2>&1 || die "$BASE is not here and debootstrap is not installed to make it (apt-get install debootstrap, or docker pull $BASE)"
  [ "$(id -u)" = 0 ] || die "making $BASE with debootstrap needs root (or docker pull $BASE)"
  local dir
  dir=$(mktemp -d /var/tmp/broker-rootfs.XXXXXX)
  cleanup_paths+=("$dir" "$dir.debootstrap.log")
  log "debootstrap $SUITE (minbase) from $MIRROR with: $*"
  local t0; t0=$(now)
  debootstrap --variant=minbase --include="$(IFS=,; echo "$*")" "$SUITE" "$dir" "$MIRROR" \
      > "$dir.debootstrap.log" 2>&1 || { tail -n 30 "$dir.debootstrap.log" >&2; rm -f "$dir.debootstrap.log"; die "debootstrap failed"; }
  rm -f "$dir.debootstrap.log"
  rm -f "$dir/etc/apt/sources.list"
  cat > "$dir/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  slim_rootfs "$dir"
  # No service may start in the chroot while packages are upgraded.
  printf '#!/bin/sh\nexit 101\n' > "$dir/usr/sbin/policy-rc.d"; chmod 755 "$dir/usr/sbin/policy-rc.d"
  if chroot "$dir" apt-get update -qq >/dev/null 2>&1 \
     && DEBIAN_FRONTEND=noninteractive chroot "$dir" apt-get upgrade -y -qq >/dev/null 2>&1; then
    log "upgraded from $SUITE-updates and $SUITE-security"
  else
    log "WARNING: could not upgrade from $SUITE-updates/$SUITE-security ($SECURITY_MIRROR): the base has $SUITE's point release only"
  fi
  rm -f "$dir/usr/sbin/policy-rc.d"
  slim_rootfs "$dir"
  mkdir -p "$(dirname "$tarball")"
  tar --numeric-owner -C "$dir" -c . | gzip -1 > "$tarball.tmp"
  mv -f "$tarball.tmp" "$tarball"
  rm -rf "$dir"
  log "root file system made in $(( $(now) - t0 )) s: $tarball ($(du -h "$tarball" | cut -f1))"
}

# Makes sure $BASE is here: present and not ours (pulled), or ours with the
# current package list; otherwise imported from the cached (or a new) rootfs.
ensure_base() {
  local pkgs key label tarball
  mapfile -t pkgs < <(runtime_packages)
  key=$(printf 'recipe=%s suite=%s arch=%s packages=%s\n' "$BASE_RECIPE" "$SUITE" "$(dpkg --print-architecture)" "${pkgs[*]}" \
        | sha256sum | cut -c1-16)
  if docker image inspect "$BASE" >/dev/null 2>&1; then
    label=$(docker image inspect -f '{{index .Config.Labels "org.broker.base.key"}}' "$BASE" 2>/dev/null || true)
    if [ -z "$label" ] || [ "$label" = "<no value>" ]; then
      log "base: $BASE as pulled (the Dockerfiles install what it lacks from the network)"
      return
    fi
    if [ "$label" = "$key" ]; then
      log "base: $BASE made by this script (key $key), up to date"
      return
    fi
    log "base: $BASE was made by this script for another package list: making it again"
  fi
  tarball="$CACHE/rootfs-$SUITE-$key.tar.gz"
  if [ -f "$tarball" ]; then
    log "base: importing the cached root file system $tarball"
  else
    make_rootfs "$tarball" "${pkgs[@]}"
    # Only one cached root file system: the others are for old package lists.
    find "$CACHE" -maxdepth 1 -name "rootfs-$SUITE-*.tar.gz" ! -name "$(basename "$tarball")" -delete
  fi
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    --change "LABEL org.broker.base.made-by=\"scripts/images.sh (debootstrap $SUITE minbase, $MIRROR)\" org.broker.base.key=\"$key\"" \
    --message "debootstrap $SUITE minbase with: ${pkgs[*]}" \
    "$tarball" "$BASE" >/dev/null
  log "base: imported $BASE (key $key)"
}

# --- the images ------------------------------------------------------------

STAGE=$(mktemp -d /tmp/broker-images.XXXXXX)
cleanup_paths+=("$STAGE")

# Every program `make build` made: broker and broker-* (broker-bus too, when
# it exists), stripped of debug information (the images are for running).
stage_broker() {
  local d=$STAGE/broker n=0 b
  mkdir -p "$d/bin"
  for b in "$BUILD"/broker "$BUILD"/broker-*; do
    [ -f "$b" ] && [ -x "$b" ] || continue
    if command -v strip >/dev/null 2>&1; then strip --strip-debug -o "$d/bin/$(basename "$b")" "$b"
    else cp "$b" "$d/bin/"; fi
    n=$((n + 1))
  done
  [ -x "$BUILD/broker" ] || die "no $BUILD/broker: run make build first (make images does)"
  cp "$DOCKER_DIR/Dockerfile" "$d/Dockerfile"
  log "broker: $n binaries: $(cd "$d/bin" && echo *)"
}

stage_gateway() {
  local d=$STAGE/gateway
  mkdir -p "$d"
  cp -r "$DOCKER_DIR/gateway" "$d/gateway"
  cp "$DOCKER_DIR/Dockerfile.gateway" "$d/Dockerfile"
}

stage_mongo_offline() {
  local d=$STAGE/mongo-offline fixture
  mkdir -p "$d/bin"
  log "mongo-offline: the FerretDB fixture (tests/ferretdb/build.sh; a few minutes the first time)"
  fixture=$(BROKER_CACHE="$CACHE" "$ROOT/tests/ferretdb/build.sh" | tail -n 1) || die "tests/ferretdb/build.sh failed"
  cp "$fixture" "$d/bin/ferretdb-fixture"
  cp "$DOCKER_DIR/mongo-offline/entrypoint.sh" "$d/bin/mongo-offline-entrypoint"
  cp "$DOCKER_DIR/Dockerfile.mongo-offline" "$d/Dockerfile"
}

tag_of() {  # tag_of TARGET
  case $1 in broker) echo broker:latest ;; gateway) echo broker-gateway:latest ;; mongo-offline) echo broker-mongo-offline:latest ;; esac
}

# One label only: on this machine's storage driver (fuse-overlayfs) the
# classic builder spends 2-4 s on every instruction, metadata ones included,
# which is also why the Dockerfiles are short on instructions.
build_image() {  # build_image TAG DIR
  local t0 revision old new
  t0=$(now)
  revision=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  old=$(docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true)
  docker build -t "$1" --label "org.opencontainers.image.revision=$revision" "$2" > "$2.log" 2>&1 \
      || { tail -n 40 "$2.log" >&2; log "ERROR: docker build $1 failed"; return 1; }
  # The image this one replaces, untagged now: remove it unless a container
  # still uses it, so that repeated builds do not pile up.
  new=$(docker image inspect -f '{{.Id}}' "$1")
  [ -z "$old" ] || [ "$old" = "$new" ] || docker rmi "$old" >/dev/null 2>&1 || true
  if grep -q '^installing:' "$2.log"; then
    log "$1: installed from the network:$(sed -n 's/^installing://p' "$2.log")"
  fi
  log "$1: built in $(( $(now) - t0 )) s"
}

size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.1f MB", $1 / 1e6}'; }

t0=$(now); ensure_base; base_s=$(( $(now) - t0 ))
for t in "${targets[@]}"; do
  case $t in
    broker) stage_broker ;;
    gateway) stage_gateway ;;
    mongo-offline) stage_mongo_offline ;;
  esac
done
# One after the other: side by side they took longer here (the daemon
# commits their layers in turn).
t0=$(now)
for t in "${targets[@]}"; do build_image "$(tag_of "$t")" "$STAGE/$t" || die "$(tag_of "$t") did not build (its log is above)"; done
log "images built in $(( $(now) - t0 )) s"
if [ -d "$STAGE/broker/bin" ]; then
  # Built on another release, a binary could want a library the image lacks:
  # fail here, not at the first start.
  missing=$(docker run --rm --entrypoint sh broker:latest -c 'ldd /usr/local/bin/broker* | grep "not found" || true')
  [ -z "$missing" ] || die "broker:latest lacks libraries: $missing"
fi

log "done in $(( $(now) - start_all )) s (base ${base_s} s)"
printf '  %-30s %s\n' "$BASE" "$(size "$BASE")" >&2
for t in "${targets[@]}"; do
  tag=$(tag_of "$t")
  printf '  %-30s %s (%s over the base)\n' "$tag" "$(size "$tag")" \
    "$(docker image inspect -f '{{.Size}}' "$tag" "$BASE" | awk 'NR == 1 { t = $1 } NR == 2 { printf "%.1f MB", (t - $1) / 1e6 }')" >&2
done
[ ! -d "$STAGE/broker/bin" ] || log "broker binaries: $(du -ch "$STAGE"/broker/bin/* | tail -n 1 | cut -f1) stripped, in one layer shared by every service"
