#!/usr/bin/env bash
# Build the engine double image (a stand-in for vLLM's OpenAI server, for kit integration tests).
#
#   1. base image kit-base:bookworm: debootstrap (minbase + python3 + ca-certificates) imported
#      with `docker import`. Also tagged kit-base:bookworm-<recipe hash>; skipped when that exists.
#   2. kit-engine-double:dev FROM the base, with the package engine_double/vllm_double in
#      /usr/local/lib/kit-engine-double and /usr/local/bin/vllm a link to its __main__.py.
#      Rebuilt only when the content hash (every .py of the package by name + this script + base
#      image id) changes; the hash is stored in the image label kit.double.hash.
#
# Nothing is pulled: there is no registry. Needs root (debootstrap), docker, debootstrap, sha256sum.
# Prints the image name on stdout at the end; progress goes to stderr.
#
# THE IMAGE IS NOT vLLM and is never tagged with a vLLM image name (enforced below).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT="$ROOT/scripts/build-double-image.sh"
DOUBLE_SRC="$ROOT/engine_double/vllm_double"   # a stdlib-only package; __main__.py is `vllm`
DOUBLE_LIB="/usr/local/lib/kit-engine-double"  # its parent folder in the image

BASE_IMAGE="${KIT_BASE_IMAGE:-kit-base:bookworm}"
IMAGE="${KIT_DOUBLE_IMAGE:-kit-engine-double:dev}"
SUITE="bookworm"
VARIANT="minbase"
INCLUDE="python3,ca-certificates"
MIRROR="${KIT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

log() { echo "build-double-image: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Guard: the double must never masquerade as a real vLLM image.
case "${IMAGE,,}" in
  *vllm*) die "refusing to tag the engine double as '$IMAGE' (looks like a vLLM image name)" ;;
esac

command -v docker >/dev/null 2>&1 || die "docker not found"
docker info >/dev/null 2>&1 || die "docker engine not reachable (run scripts/docker-up.sh)"
[ -f "$DOUBLE_SRC/__main__.py" ] || die "missing $DOUBLE_SRC/__main__.py"

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# the package's source files (not __pycache__), NUL-separated, as paths below engine_double/
double_files() { (cd "$DOUBLE_SRC/.." && find vllm_double -type f -name '*.py' -print0 | LC_ALL=C sort -z); }

# ---------------------------------------------------------------------------------------------
# 1. base image
# ---------------------------------------------------------------------------------------------
recipe="debootstrap --variant=$VARIANT --include=$INCLUDE $SUITE $MIRROR"
recipe_hash="$(printf '%s' "$recipe" | sha256sum | cut -c1-12)"
base_recipe_tag="${BASE_IMAGE%%:*}:${SUITE}-${recipe_hash}"

if image_exists "$base_recipe_tag"; then
  log "base $base_recipe_tag exists (recipe unchanged), skipping debootstrap"
else
  [ "$(id -u)" -eq 0 ] || die "debootstrap needs root to build $base_recipe_tag"
  command -v debootstrap >/dev/null 2>&1 || die "debootstrap not found (scripts/docker-up.sh installs it)"
  rootfs="$(mktemp -d "${TMPDIR:-/tmp}/kit-base-rootfs.XXXXXX")"
  cleanup_rootfs() { rm -rf --one-file-system "$rootfs"; }
  trap cleanup_rootfs EXIT
  log "debootstrap $SUITE ($VARIANT + $INCLUDE) from $MIRROR into $rootfs (about 35 s)"
  started=$SECONDS
  debootstrap --variant="$VARIANT" --include="$INCLUDE" "$SUITE" "$rootfs" "$MIRROR" >&2
  # keep the image small: no downloaded .debs, no package lists
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
  log "debootstrap took $((SECONDS - started)) s; importing"
  tar --numeric-owner -C "$rootfs" -c . |
    docker import \
      --change 'CMD ["/bin/bash"]' \
      --change "LABEL kit.base.recipe=\"$recipe\" kit.base.recipe-hash=\"$recipe_hash\"" \
      - "$base_recipe_tag" >/dev/null
  cleanup_rootfs
  trap - EXIT
  log "imported $base_recipe_tag"
fi
docker tag "$base_recipe_tag" "$BASE_IMAGE"
base_id="$(docker image inspect --format '{{.Id}}' "$base_recipe_tag")"

# ---------------------------------------------------------------------------------------------
# 2. engine double image
# ---------------------------------------------------------------------------------------------
double_hash="$(
  {
    # names and contents: adding, removing or renaming a module changes the hash too
    double_files | (cd "$DOUBLE_SRC/.." && xargs -0 sha256sum)
    sha256sum "$SCRIPT" | cut -d' ' -f1
    echo "$base_id"
  } | sha256sum | cut -c1-16
)"

current_hash=""
old_id=""
if image_exists "$IMAGE"; then
  old_id="$(docker image inspect --format '{{.Id}}' "$IMAGE")"
  current_hash="$(docker image inspect --format '{{ index .Config.Labels "kit.double.hash" }}' "$IMAGE" 2>/dev/null || true)"
fi

if [ "$current_hash" = "$double_hash" ]; then
  log "$IMAGE is up to date (kit.double.hash=$double_hash)"
else
  ctx="$(mktemp -d "${TMPDIR:-/tmp}/kit-double-ctx.XXXXXX")"
  cleanup_ctx() { rm -rf "$ctx"; }
  trap cleanup_ctx EXIT
  # the legacy builder keeps file modes and, inside a copied folder, symlinks: no RUN needed
  install -d -m 0755 "$ctx/lib" "$ctx/bin"
  while IFS= read -r -d '' f; do
    install -D -m 0644 "$DOUBLE_SRC/../$f" "$ctx/lib/$f"
  done < <(double_files)
  chmod 0755 "$ctx/lib/vllm_double/__main__.py"
  ln -s "$DOUBLE_LIB/vllm_double/__main__.py" "$ctx/bin/vllm"
  cat >"$ctx/Dockerfile" <<EOF
FROM $BASE_IMAGE
LABEL kit.double.hash="$double_hash" \\
      kit.double="true" \\
      org.opencontainers.image.title="kit-engine-double" \\
      org.opencontainers.image.description="Test double of vLLM's OpenAI-compatible server for kit integration tests. NOT vLLM."
COPY lib/ $DOUBLE_LIB/
COPY bin/ /usr/local/bin/
ENV PYTHONUNBUFFERED=1
EXPOSE 8000
ENTRYPOINT ["vllm", "serve"]
EOF
  log "building $IMAGE (kit.double.hash=$double_hash, was: ${current_hash:-none})"
  # legacy builder (no buildx here); its output is shown only when the build fails
  if ! DOCKER_BUILDKIT=0 docker build -t "$IMAGE" "$ctx" >"$ctx.log" 2>&1; then
    cat "$ctx.log" >&2
    rm -f "$ctx.log"
    die "docker build of $IMAGE failed"
  fi
  rm -f "$ctx.log"
  cleanup_ctx
  trap - EXIT
  docker run --rm --entrypoint vllm "$IMAGE" --version >/dev/null ||
    die "$IMAGE was built but 'vllm --version' fails inside it"
  # drop the superseded build (left dangling by the re-tag); ignore it if a container still uses it
  if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect --format '{{.Id}}' "$IMAGE")" ]; then
    docker image rm "$old_id" >/dev/null 2>&1 || true
  fi
  log "built $IMAGE"
fi

echo "$IMAGE"
