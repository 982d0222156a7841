#!/usr/bin/env bash
# Build the stack's PROMETHEUS image from Debian's own `prometheus` package (bookworm), with no
# registry: debootstrap (minbase + prometheus) imported with `docker import`.
#
#   image   kit-prometheus:2.42.0   /usr/bin/prometheus, /usr/bin/promtool, user prometheus,
#                                   data in /var/lib/prometheus
#
# Rebuilt only when the recipe's content hash (this script + observability/prometheus.lock)
# changes; the hash is the image label kit.prometheus.hash. Needs root, docker, debootstrap.
# Prints KIT_PROMETHEUS_IMAGE=... on stdout. Environment: KIT_PROMETHEUS_IMAGE,
# KIT_DEBIAN_MIRROR, KIT_PROMETHEUS_FORCE=1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT="$ROOT/scripts/build-prometheus-image.sh"
LOCK="$ROOT/observability/prometheus.lock"
IMAGE="${KIT_PROMETHEUS_IMAGE:-kit-prometheus:2.42.0}"
SUITE="bookworm"
VARIANT="minbase"
INCLUDE="prometheus,ca-certificates"
MIRROR="${KIT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
FORCE="${KIT_PROMETHEUS_FORCE:-0}"

T0=$SECONDS
log() { echo "build-prometheus-image: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker not found (run scripts/docker-up.sh)"
docker info >/dev/null 2>&1 || die "docker engine not reachable (run scripts/docker-up.sh)"
[ -f "$LOCK" ] || die "missing $LOCK"
want="$(grep -E '^prometheus=' "$LOCK" | cut -d= -f2)"

hash="$({ echo "debootstrap --variant=$VARIANT --include=$INCLUDE $SUITE $MIRROR"; sha256sum "$SCRIPT" "$LOCK" | cut -d' ' -f1; } | sha256sum | cut -c1-16)"
current=""
docker image inspect "$IMAGE" >/dev/null 2>&1 &&
  current="$(docker image inspect --format '{{ index .Config.Labels "kit.prometheus.hash" }}' "$IMAGE" 2>/dev/null || true)"
if [ "$FORCE" != 1 ] && [ "$current" = "$hash" ]; then
  log "up to date: $IMAGE (kit.prometheus.hash=$hash)"
  echo "KIT_PROMETHEUS_IMAGE=$IMAGE"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap not found (scripts/docker-up.sh installs it)"
rootfs="$(mktemp -d "${TMPDIR:-/tmp}/kit-prometheus-rootfs.XXXXXX")"
trap 'rm -rf --one-file-system "$rootfs"' EXIT
log "debootstrap $SUITE ($VARIANT + $INCLUDE) into $rootfs"
debootstrap --variant="$VARIANT" --include="$INCLUDE" "$SUITE" "$rootfs" "$MIRROR" \
  >"$rootfs.log" 2>&1 || { tail -30 "$rootfs.log" >&2; die "debootstrap failed"; }
rm -f "$rootfs.log"
got="$(chroot "$rootfs" dpkg-query -W -f '${Version}' prometheus)"
[ "$got" = "$want" ] || log "WARNING: Debian now ships prometheus $got, the lock says $want (update observability/prometheus.lock)"
# keep the image small: no downloaded .debs, package lists, docs or the web console libraries
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
mkdir -p "$rootfs/var/lib/prometheus/metrics2"
chroot "$rootfs" chown -R prometheus:prometheus /var/lib/prometheus
old_id=""
docker image inspect "$IMAGE" >/dev/null 2>&1 && old_id="$(docker image inspect --format '{{.Id}}' "$IMAGE")"
tar --numeric-owner -C "$rootfs" -c . |
  docker import \
    --change 'USER prometheus' \
    --change 'WORKDIR /var/lib/prometheus' \
    --change 'EXPOSE 9090' \
    --change 'ENTRYPOINT ["/usr/bin/prometheus"]' \
    --change 'CMD ["--config.file=/etc/prometheus/prometheus.yml"]' \
    --change "LABEL kit.prometheus.hash=\"$hash\" kit.prometheus.debian-version=\"$got\" org.opencontainers.image.title=\"kit-prometheus\"" \
    - "$IMAGE" >/dev/null
rm -rf --one-file-system "$rootfs"
trap - EXIT
docker run --rm --network none --entrypoint /usr/bin/promtool "$IMAGE" --version >/dev/null ||
  die "promtool does not run in $IMAGE"
if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect --format '{{.Id}}' "$IMAGE")" ]; then
  docker image rm "$old_id" >/dev/null 2>&1 || true
fi
log "built $IMAGE (prometheus $got), $(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}') in $((SECONDS - T0)) s"
echo "KIT_PROMETHEUS_IMAGE=$IMAGE"
