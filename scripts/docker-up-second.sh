#!/usr/bin/env bash
# Start a SECOND Docker engine on this machine, standing in for a second host in the kit's
# multi-host tests, and copy images into it. Idempotent: safe to run again.
#
#   scripts/docker-up-second.sh [IMAGE ...]
#
# The second dockerd is fully separate from the first (scripts/docker-up.sh):
#   socket      unix:///run/kit-docker2/docker.sock   (KIT_DOCKER2_SOCK; printed at the end)
#   data root   /var/lib/kit-docker2                  its own images, containers, volumes
#   exec root   /run/kit-docker2/exec                 its own managed containerd (namespace kit2)
#   bridge      kit-br2 10.213.0.1/24, compose networks from 10.213.64.0/18: outside Docker's
#               default pools (172.17-31.x, 192.168.x), so neither engine hands out the other's
#               ranges
#   iptables    off (--iptables=false): the first engine owns the DOCKER chains; published ports
#               still work through docker-proxy, and containers with host networking (the
#               multi-node recipes) share the machine's network like on a real host
#   GPUs        the same no-op NVIDIA hook as the first engine (simulation only)
#
# IMAGEs present in the first engine are copied (docker save | load) when the second lacks them
# or holds another image id under that name: content-addressed, so a copy happens once per build.
# Prints DOCKER2_HOST=unix://... on stdout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="${KIT_DOCKER2_RUN:-/run/kit-docker2}"
SOCK="${KIT_DOCKER2_SOCK:-$RUN_DIR/docker.sock}"
DATA_ROOT="${KIT_DOCKER2_DATA:-/var/lib/kit-docker2}"
EXEC_ROOT="$RUN_DIR/exec"
BRIDGE="${KIT_DOCKER2_BRIDGE:-kit-br2}"
BRIDGE_CIDR="${KIT_DOCKER2_BRIDGE_CIDR:-10.213.0.1/24}"
POOL="${KIT_DOCKER2_POOL:-10.213.64.0/18}"
HOOK_DIR="${KIT_FAKE_HOOK_DIR:-/opt/kit-fake-nvidia/bin}"
LOG="${KIT_DOCKERD2_LOG:-/var/log/kit-dockerd2.log}"
HOST="unix://$SOCK"
stale=()

log() { echo "docker-up-second: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
d2() { docker -H "$HOST" "$@"; }

[ "$(id -u)" -eq 0 ] || die "run as root (a second dockerd)"
command -v dockerd >/dev/null 2>&1 || die "dockerd not found (run scripts/docker-up.sh first)"
docker info >/dev/null 2>&1 || die "the first engine does not answer (run scripts/docker-up.sh first)"
[ -x "$HOOK_DIR/nvidia-container-runtime-hook" ] ||
  die "no-op NVIDIA hook missing in $HOOK_DIR (scripts/docker-up.sh installs it)"

if d2 info >/dev/null 2>&1; then
  log "second engine already running ($HOST)"
else
  mkdir -p "$RUN_DIR" "$DATA_ROOT"
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$BRIDGE_CIDR" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  # its own (empty) daemon.json: nothing of the first engine's configuration leaks in
  [ -f "$RUN_DIR/daemon.json" ] || echo '{}' >"$RUN_DIR/daemon.json"
  rm -f "$SOCK" "$RUN_DIR/docker.pid"
  log "starting the second dockerd (log: $LOG)"
  PATH="$HOOK_DIR:$PATH" nohup dockerd \
    --config-file "$RUN_DIR/daemon.json" \
    -H "$HOST" \
    --pidfile "$RUN_DIR/docker.pid" \
    --data-root "$DATA_ROOT" \
    --exec-root "$EXEC_ROOT" \
    --containerd-namespace kit2 \
    --containerd-plugins-namespace kit2-plugins \
    --bridge "$BRIDGE" \
    --default-address-pool "base=$POOL,size=24" \
    --iptables=false --ip-masq=false \
    --cgroup-parent /kit-docker2 \
    >"$LOG" 2>&1 &
  for _ in $(seq 1 80); do
    d2 info >/dev/null 2>&1 && break
    sleep 0.5
  done
  d2 info >/dev/null 2>&1 || { tail -20 "$LOG" >&2; die "the second dockerd did not start; see $LOG"; }
fi
d2 compose version >/dev/null 2>&1 || die "'docker compose' not found (run make venv, scripts/docker-up.sh)"

todo=()
for image in "$@"; do
  want="$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null)" ||
    die "image $image is not in the first engine (build it first)"
  have="$(d2 image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
  if [ "$have" = "$want" ]; then
    log "$image: up to date"
  else
    todo+=("$image")
    [ -n "$have" ] && stale+=("$have")
  fi
done
if ((${#todo[@]})); then
  # one archive for all: layers the images share (the Ray image is the real one plus Ray) go once
  t=$SECONDS
  docker save "${todo[@]}" | d2 load -q >/dev/null || die "copying ${todo[*]} failed"
  for image in "${todo[@]}"; do
    [ "$(d2 image inspect --format '{{.Id}}' "$image")" = "$(docker image inspect --format '{{.Id}}' "$image")" ] ||
      die "$image: id differs after the copy"
  done
  for old in "${stale[@]}"; do d2 image rm "$old" >/dev/null 2>&1 || true; done
  log "copied ${todo[*]} ($((SECONDS - t)) s)"
fi
log "ready ($(d2 version --format 'engine {{.Server.Version}}'), data root $DATA_ROOT)"
echo "DOCKER2_HOST=$HOST"
