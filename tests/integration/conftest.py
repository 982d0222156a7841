"""Fixtures for tests against the real Docker engine, compose binary and the engine double."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockerutil import free_port

REPO = Path(__file__).resolve().parents[2]
SIM = REPO / "stacks" / "sim-demo.yaml"


@pytest.fixture
def state_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "state"
    monkeypatch.setenv("KIT_STATE_DIR", str(d))
    return d


@pytest.fixture
def sim_stack(tmp_path, docker_engine, state_dir):
    """The shipped simulation stack under a unique name and free ports, with env tweaks.

    Returns ``make(env={service: {VAR: value}}, patch={service: {field: value}}) -> path``.
    Whatever a test starts is removed at the end, even if the test fails.
    """
    made: list[str] = []

    def make(
        env: dict[str, dict[str, str]] | None = None, patch: dict[str, dict[str, Any]] | None = None
    ) -> Path:
        data = yaml.safe_load(SIM.read_text())
        name = f"kit-test-{uuid.uuid4().hex[:8]}"
        data["defaults"]["model_root"] = str(REPO / "stacks" / "sim-models")
        for svc_name, svc in data["services"].items():
            svc["port"] = free_port()
            svc.setdefault("env", {}).update((env or {}).get(svc_name, {}))
            svc.update((patch or {}).get(svc_name, {}))
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        made.append(name)
        return path

    yield make
    for name in made:
        subprocess.run(
            ["docker", "compose", "-p", name, "down", "--remove-orphans", "-t", "1"],
            capture_output=True,
            check=False,
        )
