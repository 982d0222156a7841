#!/usr/bin/env bash
# Create an isolated venv with ModelScope's `evalscope perf` (the load generator we compare against).
#
#   bash bench/setup_evalscope.sh            # -> <repo>/.venv-evalscope
#   EVALSCOPE_VENV=/some/dir bash bench/setup_evalscope.sh
#   PYTHON=python3.11 bash bench/setup_evalscope.sh
#
# evalscope is installed with --no-deps, plus a pinned, self-consistent set of the packages that
# `evalscope perf` actually imports (found by running it until nothing was missing) and their own
# dependencies. This leaves out what only evalscope's model-evaluation side needs (transformers,
# modelscope, nltk, jieba, sympy, scipy, plotly, ...): ~550 MB / ~30 s instead of ~1.2 GB / ~100 s for
# `pip install 'evalscope[perf]'`. Neither pulls torch. Not installed on purpose:
#   - transformers: only for --tokenizer-path / --tokenize-prompt / the `random` datasets;
#   - modelscope: only to download hub datasets (use --dataset-path with a local file instead);
#   - plotly: only for perf_report.html (evalscope then logs "Failed to generate HTML report").
# Idempotent: a stamp file records what was installed; a second run only re-checks the imports.
set -euo pipefail

EVALSCOPE_VERSION=1.14.1
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${EVALSCOPE_VENV:-$REPO_ROOT/.venv-evalscope}
PYTHON=${PYTHON:-python3}

# Everything `evalscope perf` needs at run time, with their dependencies (a closed set: pip resolves
# it to exactly these versions). Imported directly by evalscope (perf path): aiohttp, colorlog,
# datasets, dill, docstring_parser, editdistance, fastapi, filelock, filetype, huggingface_hub,
# httpx, jinja2, jsonlines, jsonschema, numpy, openai, packaging, pandas, pillow, pyarrow, pydantic,
# python-dateutil, PyYAML, requests, rich, sse-starlette, tabulate, tqdm, uvicorn, uvloop, xxhash.
PINS='
aiohappyeyeballs==2.7.1
aiohttp==3.14.5
aiosignal==1.4.0
annotated-doc==0.0.7
annotated-types==0.8.0
anyio==4.16.0
attrs==26.1.0
certifi==2026.10.19.post1
charset-normalizer==3.5.3
click==8.5.1
colorlog==6.12.0
datasets==4.8.4
dill==0.4.1
docstring_parser==0.18.0
editdistance==0.8.1
fastapi==0.165.0
filelock==4.3.1
filetype==1.2.0
frozenlist==1.8.0
fsspec==2026.2.0
h11==0.16.0
hf-xet==1.8.0
httpcore==1.0.9
httpcore2==2.16.2
httpx==0.28.1
httpx2==2.16.2
huggingface_hub==1.33.0
idna==3.20
Jinja2==3.1.6
jiter==0.19.0
jsonlines==4.0.0
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mdurl==0.1.2
multidict==7.2.1
multiprocess==0.70.19
numpy==2.4.6
openai==3.57.0
opentelemetry-api==1.45.2
packaging==26.4
pandas==3.1.1
pillow==13.0.0
propcache==0.5.4
pyarrow==26.0.1
pydantic==2.14.4
pydantic_core==2.50.5
Pygments==2.21.0
python-dateutil==4.0.0
PyYAML==6.0.4
referencing==0.37.0
requests==2.34.2
rich==15.0.0
rpds-py==2026.9.1
sniffio==1.3.1
sse-starlette==3.7.0
starlette==1.10.0
tabulate==0.10.0
tqdm==4.70.1
truststore==0.10.5
typing-inspection==0.4.5
typing_extensions==4.16.0
tzdata==2026.6
urllib3==2.8.0
uvicorn==0.54.0
uvloop==0.23.0
xxhash==4.1.0
yarl==1.25.1
'

# Modules the perf run imports (some only once a run starts, not for --help).
SMOKE='import evalscope.perf.main, evalscope.perf.benchmark, evalscope.perf.plugin.api.openai_api
import evalscope.perf.plugin.datasets.openqa, evalscope.perf.plugin.datasets.line_by_line
import evalscope.perf.utils.local_server, evalscope.perf.utils.rich_display, aiohttp, uvloop, jinja2'

log() { printf '[setup_evalscope] %s\n' "$*" >&2; }

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    log "need Python >= 3.10 (evalscope's floor); got: $("$PYTHON" --version 2>&1 || echo "no $PYTHON")"
    exit 1
fi

stamp_want=$(printf '%s\n%s\n%s\n' "$EVALSCOPE_VERSION" "$PINS" \
    "$("$PYTHON" -c 'import sys; print(sys.version)')" | sha256sum | cut -d' ' -f1)
stamp_file=$VENV/.evalscope-setup.stamp

installed_ok() {
    [ -x "$VENV/bin/python" ] && [ -x "$VENV/bin/evalscope" ] && [ -f "$stamp_file" ] \
        && [ "$(cat "$stamp_file")" = "$stamp_want" ] \
        && HF_HUB_OFFLINE=1 "$VENV/bin/python" -c "$SMOKE" >/dev/null 2>&1
}

if installed_ok; then
    log "already set up: $VENV"
else
    t0=$(date +%s)
    if [ -e "$VENV" ]; then
        # Rebuild from scratch, but only delete something that is a venv (or an empty folder).
        if [ -f "$VENV/pyvenv.cfg" ] || [ -z "$(ls -A "$VENV" 2>/dev/null)" ]; then
            log "removing stale or incomplete venv: $VENV"
            rm -rf "$VENV"
        else
            log "$VENV exists and is not a venv; refusing to touch it (set EVALSCOPE_VENV)"
            exit 1
        fi
    fi
    log "creating venv $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
    printf '*\n' > "$VENV/.gitignore"   # keep the venv out of git without touching the repo's .gitignore
    pins_file=$VENV/.evalscope-pins.txt
    printf '%s' "$PINS" | sed '/^$/d' > "$pins_file"
    export PIP_DISABLE_PIP_VERSION_CHECK=1
    log "installing $(wc -l < "$pins_file") pinned runtime packages"
    "$VENV/bin/python" -m pip install -q --progress-bar off -r "$pins_file"
    # Last and without dependencies, so pip does not drag in evalscope's evaluation stack.
    log "installing evalscope==$EVALSCOPE_VERSION (--no-deps)"
    "$VENV/bin/python" -m pip install -q --progress-bar off --no-deps "evalscope==$EVALSCOPE_VERSION"
    if ! HF_HUB_OFFLINE=1 "$VENV/bin/python" -c "$SMOKE"; then
        log "evalscope perf modules do not import; see the error above"
        exit 1
    fi
    printf '%s\n' "$stamp_want" > "$stamp_file"
    log "installed in $(( $(date +%s) - t0 )) s, venv size $(du -sh "$VENV" | cut -f1)"
fi

"$VENV/bin/evalscope" --version
