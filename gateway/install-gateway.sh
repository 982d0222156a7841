#!/bin/sh
# Runs INSIDE a container of the kit base image (scripts/build-gateway-image.sh does
# `docker run` + `docker commit`): installs the LiteLLM proxy into /opt/litellm from the
# host-built wheelhouse, offline (--no-index) and hash-checked (litellm.lock).
#   /wh : wheelhouse (read-only)     /r : this folder (read-only)
set -eu
python3 -m venv --without-pip /opt/litellm
# Debian's python3 has no ensurepip: run pip straight from its wheel; the lock pins pip itself
for pip_whl in /wh/pip-*-py3-none-any.whl; do break; done
/opt/litellm/bin/python "$pip_whl/pip" install --quiet --no-cache-dir --disable-pip-version-check \
  --no-index --no-deps --require-hashes --find-links /wh -r /r/litellm.lock
got="$(/opt/litellm/bin/python -c 'import importlib.metadata as m; print(m.version("litellm"))')"
[ "$got" = "$2" ] || { echo "install-gateway: litellm is $got, expected $2" >&2; exit 1; }
# the health probe the compose file runs (no curl in the image)
cat >/usr/local/bin/kit-gateway-probe <<'PY'
#!/opt/litellm/bin/python
"""Exit 0 when the gateway answers GET /health/liveliness (no key needed) on port 4000."""
import sys
import urllib.request

try:
    urllib.request.urlopen("http://127.0.0.1:4000/health/liveliness", timeout=4)
except Exception as exc:  # noqa: BLE001
    print(exc, file=sys.stderr)
    sys.exit(1)
PY
chmod 755 /usr/local/bin/kit-gateway-probe
rm -rf /root/.cache /tmp/* 2>/dev/null || true
