"""The resolver the image recipes' make-lock scripts share (realengine/, train/, gateway/).

Resolves requirements with the host's pip (CPython 3.11 on x86_64 Linux: the interpreter
Debian bookworm ships in the images) through `pip install --dry-run --report`, binary wheels
only, and writes `NAME==VERSION --hash=sha256:...` lines that the image builds install with
`pip install --no-index --no-deps --require-hashes -r LOCK`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

Pins = dict[str, tuple[str, str]]


def require_py311() -> None:
    if sys.version_info[:2] != (3, 11):
        sys.exit("make-lock: needs CPython 3.11 (the image's Python)")


def canon(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def resolve(reqs: list[str], *extra: str) -> Pins:
    """Every package pip would install for `reqs` (plus extra pip options), with its sha256."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
               "--only-binary", ":all:", "--quiet", "--report", str(report), *extra, *reqs]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            sys.stderr.write(done.stdout + done.stderr)
            sys.exit(f"make-lock: pip failed: {' '.join(cmd)}")
        data = json.loads(report.read_text())
    out = {}
    for item in data["install"]:
        meta = item["metadata"]
        sha = item["download_info"]["archive_info"]["hashes"]["sha256"]
        out[canon(meta["name"])] = (meta["version"], sha)
    return out


def write(path: Path, header: str, pins: Pins) -> None:
    """The lock file: the header as comment lines, then one hashed pin per package, sorted."""
    lines = [f"# {line}" if line else "#" for line in header.strip().splitlines()]
    lines += [f"{name}=={pins[name][0]} --hash=sha256:{pins[name][1]}" for name in sorted(pins)]
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path} ({len(pins)} packages)")
