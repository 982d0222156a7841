#!/usr/bin/env bash
# Build the stack GATEWAY image: the LiteLLM proxy (PyPI `litellm[proxy]`, exact version, every
# wheel hash-checked from gateway/litellm.lock) installed into the kit base image.
#
#   image   kit-gateway-litellm:1.106.12   /opt/litellm venv, `litellm` on PATH,
#                                          LITELLM_LOCAL_MODEL_COST_MAP=True (starts offline),
#                                          /usr/local/bin/kit-gateway-probe (healthcheck)
#
# Stages, each skipped when its content hash is already built:
#   1. wheelhouse  pip download (host, CPython 3.11) of gateway/litellm.lock, hash-checked,
#                  into /var/cache/kit-gateway/wheelhouse
#   2. base        kit-base:bookworm from scripts/build-double-image.sh (debootstrap + python3)
#   3. image       docker run (base, wheelhouse mounted read-only, no network)
#                  gateway/install-gateway.sh, docker commit, label kit.gateway.hash
#
# Nothing is pulled from a registry. Needs root, docker, python3 3.11 with pip.
# Prints KIT_GATEWAY_IMAGE=... on stdout. Environment: KIT_GATEWAY_CACHE, KIT_GATEWAY_IMAGE,
# KIT_GATEWAY_FORCE=1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT="$ROOT/scripts/build-gateway-image.sh"
RECIPE="$ROOT/gateway"
LITELLM_VERSION="1.106.12"
CACHE="${KIT_GATEWAY_CACHE:-/var/cache/kit-gateway}"
WHEELHOUSE="$CACHE/wheelhouse"
IMAGE="${KIT_GATEWAY_IMAGE:-kit-gateway-litellm:$LITELLM_VERSION}"
BASE_IMAGE="${KIT_BASE_IMAGE:-kit-base:bookworm}"
FORCE="${KIT_GATEWAY_FORCE:-0}"

T0=$SECONDS
log() { echo "build-gateway-image: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker not found (run scripts/docker-up.sh)"
docker info >/dev/null 2>&1 || die "docker engine not reachable (run scripts/docker-up.sh)"
for f in litellm.lock install-gateway.sh; do [ -f "$RECIPE/$f" ] || die "missing $RECIPE/$f"; done
grep -q "^litellm==$LITELLM_VERSION " "$RECIPE/litellm.lock" ||
  die "gateway/litellm.lock does not pin litellm==$LITELLM_VERSION"
if grep -Eq '^litellm==1\.82\.[78] ' "$RECIPE/litellm.lock"; then
  die "gateway/litellm.lock pins a compromised LiteLLM release (1.82.7/1.82.8)"
fi
docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 ||
  die "base image $BASE_IMAGE missing (scripts/build-double-image.sh builds it)"

mkdir -p "$CACHE"
exec 9>"$CACHE/.build.lock"
flock -n 9 || { log "another build holds $CACHE/.build.lock; waiting"; flock 9; }

hash_files() { sha256sum "$@" | cut -d' ' -f1 | sha256sum | cut -c1-16; }
base_id="$(docker image inspect --format '{{.Id}}' "$BASE_IMAGE")"
image_hash="$(
  { echo "$base_id $LITELLM_VERSION"; hash_files "$RECIPE/litellm.lock" "$RECIPE/install-gateway.sh" "$SCRIPT"; } |
    sha256sum | cut -c1-16
)"
current=""
docker image inspect "$IMAGE" >/dev/null 2>&1 &&
  current="$(docker image inspect --format '{{ index .Config.Labels "kit.gateway.hash" }}' "$IMAGE" 2>/dev/null || true)"
if [ "$FORCE" != 1 ] && [ "$current" = "$image_hash" ]; then
  log "up to date: $IMAGE (kit.gateway.hash=$image_hash)"
  echo "KIT_GATEWAY_IMAGE=$IMAGE"
  exit 0
fi

# 1. wheelhouse
lock_hash="$(hash_files "$RECIPE/litellm.lock")"
if [ "$FORCE" != 1 ] && [ -f "$WHEELHOUSE/.lock.hash" ] && [ "$(cat "$WHEELHOUSE/.lock.hash")" = "$lock_hash" ]; then
  log "[wheelhouse] complete for this lock (hash $lock_hash)"
else
  PY="${KIT_GATEWAY_PYTHON:-python3}"
  "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
    die "$PY is not CPython 3.11: the lock pins cp311 wheels (set KIT_GATEWAY_PYTHON)"
  mkdir -p "$WHEELHOUSE"
  rm -f "$WHEELHOUSE/.lock.hash"
  started=$SECONDS
  if ! "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
    --only-binary :all: -d "$WHEELHOUSE" -r "$RECIPE/litellm.lock" >"$CACHE/pip-download.log" 2>&1; then
    grep -v "^WARNING: Location" "$CACHE/pip-download.log" | tail -30 >&2
    die "pip download failed (full log: $CACHE/pip-download.log)"
  fi
  echo "$lock_hash" >"$WHEELHOUSE/.lock.hash"
  log "[wheelhouse] $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1) ($((SECONDS - started)) s)"
fi

# 3. image
started=$SECONDS
old_id=""
docker image inspect "$IMAGE" >/dev/null 2>&1 && old_id="$(docker image inspect --format '{{.Id}}' "$IMAGE")"
ctr="kit-gateway-build-$$"
docker rm -f "$ctr" >/dev/null 2>&1 || true
trap 'docker rm -f "$ctr" >/dev/null 2>&1 || true' EXIT
docker run --name "$ctr" --network none -v "$WHEELHOUSE:/wh:ro" -v "$RECIPE:/r:ro" \
  "$BASE_IMAGE" /bin/sh /r/install-gateway.sh /wh "$LITELLM_VERSION" >&2 ||
  die "installing litellm into $ctr failed"
docker commit \
  --change 'ENV PATH=/opt/litellm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LITELLM_LOCAL_MODEL_COST_MAP=True PYTHONUNBUFFERED=1 DO_NOT_TRACK=1' \
  --change 'WORKDIR /' \
  --change 'EXPOSE 4000' \
  --change 'ENTRYPOINT ["litellm"]' \
  --change 'CMD []' \
  --change "LABEL kit.gateway.hash=\"$image_hash\" kit.gateway.engine=\"litellm\" kit.gateway.version=\"$LITELLM_VERSION\" org.opencontainers.image.title=\"kit-gateway-litellm\"" \
  "$ctr" "$IMAGE" >/dev/null
docker rm -f "$ctr" >/dev/null
trap - EXIT
got="$(docker run --rm --network none --entrypoint /opt/litellm/bin/python "$IMAGE" -c 'import importlib.metadata as m; print(m.version("litellm"))')"
[ "$got" = "$LITELLM_VERSION" ] || die "litellm in $IMAGE is '$got', expected $LITELLM_VERSION"
if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect --format '{{.Id}}' "$IMAGE")" ]; then
  docker image rm "$old_id" >/dev/null 2>&1 || true
fi
log "[image] built $IMAGE, $(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}') ($((SECONDS - started)) s); total $((SECONDS - T0)) s"
echo "KIT_GATEWAY_IMAGE=$IMAGE"
