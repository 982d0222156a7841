"""Shared test helpers: stack files and model folders built on the fly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockerutil import in_ci
from stackutil import BASE_STACK, deep_merge


@pytest.fixture
def stack_file(tmp_path: Path):
    """Write a stack (BASE_STACK merged with a patch) and return its path."""

    def make(
        patch: dict[str, Any] | None = None,
        *,
        services: dict[str, Any] | None = None,
        name: str = "t",
        raw: str | None = None,
    ) -> Path:
        path = tmp_path / f"{name}.yaml"
        if raw is not None:
            path.write_text(raw)
            return path
        data = deep_merge(BASE_STACK, patch or {})
        if services is not None:
            data["services"] = services
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return make


# --- Docker-backed tests: never skipped in CI ------------------------------------------------

DOUBLE_IMAGE = os.environ.get("KIT_DOUBLE_IMAGE", "kit-engine-double:dev")


def docker_problem() -> str | None:
    """Why Docker-backed tests cannot run here, or None."""
    import subprocess

    from kit.engine import engine_available

    why = engine_available()
    if why:
        return f"{why} (run `make engine`)"
    probe = subprocess.run(
        ["docker", "image", "inspect", DOUBLE_IMAGE], capture_output=True, check=False
    )
    if probe.returncode != 0:
        return f"image {DOUBLE_IMAGE} missing (run `make double-image`)"
    return None


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The engine double image name; skips locally without Docker, FAILS in CI."""
    why = docker_problem()
    if why:
        if in_ci():
            pytest.fail(f"Docker is required in CI: {why}")
        pytest.skip(f"Docker not available: {why}")
    return DOUBLE_IMAGE


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "docker_engine" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.docker)


def pytest_sessionfinish(session, exitstatus):
    """In CI a skipped test is a failure: integration tests must really run there."""
    if not in_ci():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped:
        reporter.write_line(f"CI: {skipped} test(s) skipped; skips are failures in CI", red=True)
        session.exitstatus = 1
