#!/bin/sh
# Runs INSIDE a container of the real-engine base image (scripts/build-train-image.sh does
# `docker run` + `docker commit`): installs TRL, PEFT, transformers, accelerate and the CPU
# torch into /opt/train from the host-built wheelhouse, offline (--no-index) and hash-checked.
#   /wh : wheelhouse (read-only)     /r : this folder (read-only)
set -eu
python3 -m venv --without-pip /opt/train
# Debian's python3 has no ensurepip: run pip straight from its wheel; train.lock pins pip
for pip_whl in /wh/pip-*-py3-none-any.whl; do break; done
/opt/train/bin/python "$pip_whl/pip" install --quiet --no-cache-dir --disable-pip-version-check \
  --no-index --no-deps --require-hashes --find-links /wh -r /r/train.lock
/opt/train/bin/python - <<'PY'
import importlib.metadata as md
want = {"trl": "1.16.0", "peft": "0.21.2", "transformers": "5.24.0", "torch": "2.13.0+cpu"}
got = {name: md.version(name) for name in want}
bad = {k: v for k, v in got.items() if v != want[k]}
if bad:
    raise SystemExit(f"install-train: wrong versions {bad}, expected {want}")
import trl, peft, transformers  # noqa: E401,F401  (imports work offline)
print("install-train:", " ".join(f"{k}=={v}" for k, v in got.items()))
PY
for pkg in torchvision torchaudio torchcodec triton; do
  if /opt/train/bin/python -m pip show -q "$pkg" >/dev/null 2>&1; then
    echo "install-train: $pkg is installed but must not be" >&2; exit 1
  fi
done
rm -rf /root/.cache /tmp/* 2>/dev/null || true
