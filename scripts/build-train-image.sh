#!/usr/bin/env bash
# Build the CPU TRAINING image for the kit's training-job tests: TRL 1.16.0, PEFT 0.21.2,
# transformers 5.24.0, accelerate 1.15.0 and the CPU torch 2.13.0 in /opt/train of the
# real-engine base image (scripts/build-real-image.sh builds that base and the models).
#
#   image   kit-train-cpu:trl-1.16.0   `trl` on PATH, offline (HF_HUB_OFFLINE=1), no models
#
# Stages (each timed on stderr), every one skipped when its content hash is already built:
#   1. wheelhouse  pip download (host, CPython 3.11) of train/train.lock, hash-checked, into
#                  $KIT_TRAIN_CACHE/wheelhouse (default /var/cache/kit-train)
#   2. image       docker run (base, wheelhouse mounted read-only) train/install-train.sh,
#                  docker commit, label kit.train.hash
#
# Nothing is pulled from a registry; the container installs offline (--no-index). Needs root,
# docker, python3 3.11 with pip, and the base image kit-real-base:bookworm-<hash>.
# Prints KIT_TRAIN_IMAGE=... on stdout (eval-able). KIT_TRAIN_FORCE=1 rebuilds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT="$ROOT/scripts/build-train-image.sh"
RECIPE="$ROOT/train"
TRL_VERSION="1.16.0"
CACHE="${KIT_TRAIN_CACHE:-/var/cache/kit-train}"
WHEELHOUSE="$CACHE/wheelhouse"
IMAGE="${KIT_TRAIN_IMAGE:-kit-train-cpu:trl-$TRL_VERSION}"
FORCE="${KIT_TRAIN_FORCE:-0}"
# the real-engine base: the same recipe string as scripts/build-real-image.sh
MIRROR="${KIT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
base_recipe="debootstrap --variant=minbase --include=python3,ca-certificates,libnuma1,libgomp1 bookworm $MIRROR"
BASE_IMAGE="kit-real-base:bookworm-$(printf '%s' "$base_recipe" | sha256sum | cut -c1-12)"

T0=$SECONDS
log() { echo "build-train-image: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
stage_start() { STAGE="$1"; STAGE_T=$SECONDS; log "[$STAGE] $2"; }
stage_end() { log "[$STAGE] ${1:-done} ($((SECONDS - STAGE_T)) s)"; }

[ "$(id -u)" -eq 0 ] || die "run as root (/var/cache)"
docker info >/dev/null 2>&1 || die "docker engine not reachable (run scripts/docker-up.sh)"
for f in train.lock install-train.sh; do [ -f "$RECIPE/$f" ] || die "missing $RECIPE/$f"; done

mkdir -p "$CACHE"
exec 9>"$CACHE/.build.lock"
flock -n 9 || { log "another build holds $CACHE/.build.lock; waiting"; flock 9; }

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }
label_of() { docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }

train_hash="$(
  { echo "$base_recipe" "$TRL_VERSION"
    sha256sum "$RECIPE/train.lock" "$RECIPE/install-train.sh" "$SCRIPT" | cut -d' ' -f1
  } | sha256sum | cut -c1-16
)"
if [ "$FORCE" != 1 ] && image_exists "$IMAGE" && [ "$(label_of "$IMAGE" kit.train.hash)" = "$train_hash" ]; then
  log "up to date: $IMAGE (kit.train.hash=$train_hash)"
  echo "KIT_TRAIN_IMAGE=$IMAGE"
  exit 0
fi
image_exists "$BASE_IMAGE" || die "base image $BASE_IMAGE missing: run scripts/build-real-image.sh (make real-image) first"

stage_start wheelhouse "pip download of train/train.lock into $WHEELHOUSE"
lock_hash="$(sha256sum "$RECIPE/train.lock" | cut -c1-16)"
if [ "$FORCE" != 1 ] && [ -f "$WHEELHOUSE/.lock.hash" ] && [ "$(cat "$WHEELHOUSE/.lock.hash")" = "$lock_hash" ]; then
  stage_end "complete for this lock (hash $lock_hash)"
else
  PY="${KIT_TRAIN_PYTHON:-python3}"
  "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
    die "$PY is not CPython 3.11: the lock pins cp311 wheels (set KIT_TRAIN_PYTHON)"
  mkdir -p "$WHEELHOUSE"
  rm -f "$WHEELHOUSE/.lock.hash"
  dl_log="$CACHE/pip-download.log"
  if ! "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
    --only-binary :all: -d "$WHEELHOUSE" -r "$RECIPE/train.lock" >"$dl_log" 2>&1; then
    grep -v "^WARNING: Location" "$dl_log" | tail -30 >&2
    die "pip download failed (full log: $dl_log)"
  fi
  echo "$lock_hash" >"$WHEELHOUSE/.lock.hash"
  stage_end "$(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1)"
fi

stage_start image "$IMAGE (kit.train.hash=$train_hash)"
old_id=""
image_exists "$IMAGE" && old_id="$(docker image inspect --format '{{.Id}}' "$IMAGE")"
ctr="kit-train-build-$$"
docker rm -f "$ctr" >/dev/null 2>&1 || true
trap 'docker rm -f "$ctr" >/dev/null 2>&1 || true' EXIT
docker run --name "$ctr" --network none -v "$WHEELHOUSE:/wh:ro" -v "$RECIPE:/r:ro" \
  "$BASE_IMAGE" /bin/sh /r/install-train.sh >&2 || die "installing TRL into $ctr failed"
docker commit \
  --change 'ENV PATH=/opt/train/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false DO_NOT_TRACK=1' \
  --change 'WORKDIR /' \
  --change 'ENTRYPOINT []' \
  --change 'CMD ["trl", "--help"]' \
  --change "LABEL kit.train.hash=\"$train_hash\" kit.train.trl=\"$TRL_VERSION\" org.opencontainers.image.title=\"kit-train-cpu\" org.opencontainers.image.description=\"TRL $TRL_VERSION, PEFT, transformers, CPU torch for kit training-job tests\"" \
  "$ctr" "$IMAGE" >/dev/null
docker rm -f "$ctr" >/dev/null
trap - EXIT
got="$(docker run --rm --network none "$IMAGE" python -c 'import trl; print(trl.__version__)' 2>&1 | tail -1)" || true
[ "$got" = "$TRL_VERSION" ] || die "trl in $IMAGE says '$got', expected $TRL_VERSION"
if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect --format '{{.Id}}' "$IMAGE")" ]; then
  docker image rm "$old_id" >/dev/null 2>&1 || true
fi
stage_end "built, $(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}')"
log "total $((SECONDS - T0)) s"
echo "KIT_TRAIN_IMAGE=$IMAGE"
