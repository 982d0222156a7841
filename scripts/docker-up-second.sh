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
#   tcp + TLS   it ALSO listens on tcp://127.0.0.1:29200 (KIT_DOCKER2_TCP_PORT) with --tlsverify:
#               certificates made once with openssl in /var/lib/kit-docker2-tls (KIT_DOCKER2_TLS):
#               ca.pem, server-cert.pem/server-key.pem (127.0.0.1, localhost), cert.pem/key.pem
#               (the client's; the folder works as DOCKER_CERT_PATH). An engine already running
#               without that listener is restarted once.
#   ssh         ssh://kit-docker2: an sshd on 127.0.0.1:29201 whose sessions reach this engine
#               (scripts/ssh-up-second.sh)
#
# IMAGEs present in the first engine are copied (docker save | load) when the second lacks them
# or holds another image id under that name: content-addressed, so a copy happens once per build.
# Prints DOCKER2_HOST=unix://..., DOCKER2_TCP=tcp://..., DOCKER2_TLS=DIR and DOCKER2_SSH=ssh://...
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
TLS_DIR="${KIT_DOCKER2_TLS:-/var/lib/kit-docker2-tls}"
TCP="tcp://127.0.0.1:${KIT_DOCKER2_TCP_PORT:-29200}"
stale=()

log() { echo "docker-up-second: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
d2() { docker -H "$HOST" "$@"; }
d2tls() {
  docker -H "$TCP" --tlsverify --tlscacert "$TLS_DIR/ca.pem" --tlscert "$TLS_DIR/cert.pem" \
    --tlskey "$TLS_DIR/key.pem" "$@"
}

# a CA, the server's certificate (127.0.0.1, localhost) and a client's, once
make_tls() {
  local f
  for f in ca.pem server-cert.pem server-key.pem cert.pem key.pem; do
    [ -s "$TLS_DIR/$f" ] || break
  done
  [ -s "$TLS_DIR/$f" ] && return 0
  log "making TLS certificates in $TLS_DIR"
  local t
  t="$(mktemp -d)"
  (
    set -e
    cd "$t"
    openssl req -x509 -new -newkey rsa:2048 -nodes -days 3650 -keyout ca-key.pem -out ca.pem \
      -subj "/CN=kit-docker2 test CA"
    openssl req -new -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr \
      -subj "/CN=127.0.0.1"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -days 3650 -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
      -extfile server.ext -out server-cert.pem
    openssl req -new -newkey rsa:2048 -nodes -keyout key.pem -out client.csr -subj "/CN=kit"
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -days 3650 -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
      -extfile client.ext -out cert.pem
  ) >/dev/null 2>&1 || { rm -rf "$t"; die "openssl could not make the TLS certificates"; }
  mkdir -p "$TLS_DIR"
  chmod 700 "$TLS_DIR"
  chmod 600 "$t"/*key.pem
  mv "$t"/{ca.pem,ca-key.pem,server-cert.pem,server-key.pem,cert.pem,key.pem} "$TLS_DIR/"
  rm -rf "$t"
}

[ "$(id -u)" -eq 0 ] || die "run as root (a second dockerd)"
command -v dockerd >/dev/null 2>&1 || die "dockerd not found (run scripts/docker-up.sh first)"
docker info >/dev/null 2>&1 || die "the first engine does not answer (run scripts/docker-up.sh first)"
[ -x "$HOOK_DIR/nvidia-container-runtime-hook" ] ||
  die "no-op NVIDIA hook missing in $HOOK_DIR (scripts/docker-up.sh installs it)"

if ! command -v openssl >/dev/null 2>&1; then
  log "installing openssl"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi
make_tls
if d2 info >/dev/null 2>&1 && ! d2tls info >/dev/null 2>&1; then
  # started before it had the TLS listener (or with other certificates): restart it once
  log "restarting the second engine: no TLS listener on $TCP"
  pid="$(cat "$RUN_DIR/docker.pid" 2>/dev/null || true)"
  [ -n "$pid" ] || die "the second engine answers but $RUN_DIR/docker.pid is missing"
  kill "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  ! kill -0 "$pid" 2>/dev/null || die "the second dockerd (pid $pid) did not stop"
fi
if d2 info >/dev/null 2>&1; then
  log "second engine already running ($HOST, $TCP)"
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
  # the first engine's default bridge, to put back if this start removes it (below)
  docker0_cidr="$(ip -4 -o addr show docker0 2>/dev/null | awk '{print $4; exit}')"
  log "starting the second dockerd (log: $LOG)"
  # its own session (setsid): a shell whose process group is killed leaves the engine running
  PATH="$HOOK_DIR:$PATH" setsid nohup dockerd \
    --config-file "$RUN_DIR/daemon.json" \
    -H "$HOST" \
    -H "$TCP" --tlsverify --tlscacert "$TLS_DIR/ca.pem" \
    --tlscert "$TLS_DIR/server-cert.pem" --tlskey "$TLS_DIR/server-key.pem" \
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
  d2tls info >/dev/null 2>&1 || { tail -20 "$LOG" >&2; die "no TLS listener on $TCP; see $LOG"; }
  # A RESTARTED second engine (dockerd 20.10) clears its stale default network and with it
  # deletes the interface docker0 of the FIRST engine on the same kernel (seen here: the first
  # engine's `docker run` then fails with "could not find bridge docker0"). Put it back as it
  # was; the first engine finds its bridge by name. A first start on a fresh machine keeps it.
  if [ -n "$docker0_cidr" ] && ! ip link show docker0 >/dev/null 2>&1; then
    log "restoring the first engine's bridge docker0 ($docker0_cidr)"
    ip link add docker0 type bridge
    ip addr add "$docker0_cidr" dev docker0
    ip link set docker0 up
  fi
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
KIT_DOCKER2_SOCK="$SOCK" "$ROOT/scripts/ssh-up-second.sh"
log "ready ($(d2 version --format 'engine {{.Server.Version}}'), data root $DATA_ROOT)"
echo "DOCKER2_HOST=$HOST"
echo "DOCKER2_TCP=$TCP"
echo "DOCKER2_TLS=$TLS_DIR"
echo "DOCKER2_SSH=ssh://kit-docker2"
