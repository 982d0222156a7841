"""Fixtures for tests against the real Docker engine, compose binary and the engine double."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dockerutil import compose_down, write_sim_stack


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
        env: dict[str, dict[str, str]] | None = None,
        patch: dict[str, dict[str, Any]] | None = None,
    ) -> Path:
        path = write_sim_stack(tmp_path, env=env, patch=patch)
        made.append(path.stem)
        return path

    yield make
    for name in made:
        compose_down(name)
