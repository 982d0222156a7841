"""Helpers for tests that look at the real Docker engine."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from doubleutil import free_port

REPO = Path(__file__).resolve().parent.parent
SIM = REPO / "stacks" / "sim-demo.yaml"
SIM_MODELS = REPO / "stacks" / "sim-models"

__all__ = [
    "compose_down",
    "free_port",
    "in_ci",
    "inspect_container",
    "kill_container",
    "project_containers",
    "project_networks",
    "write_sim_stack",
]


def in_ci() -> bool:
    """CI sets CI=true: there, tests that need Docker or the real engine must run, not skip."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def write_sim_stack(
    folder: Path,
    *,
    env: dict[str, dict[str, str]] | None = None,
    patch: dict[str, dict[str, Any]] | None = None,
    defaults: dict[str, Any] | None = None,
    only: tuple[str, ...] | None = None,
) -> Path:
    """The shipped simulation stack under a unique name and free ports, with per-service env
    and field tweaks, extra defaults, or a subset of its services."""
    data = yaml.safe_load(SIM.read_text())
    name = f"kit-test-{uuid.uuid4().hex[:8]}"
    data["defaults"]["model_root"] = str(SIM_MODELS)
    data["defaults"].update(defaults or {})
    if only is not None:
        data["services"] = {k: v for k, v in data["services"].items() if k in only}
    for svc_name, svc in data["services"].items():
        svc["port"] = free_port()
        svc.setdefault("env", {}).update((env or {}).get(svc_name, {}))
        svc.update((patch or {}).get(svc_name, {}))
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def compose_down(name: str) -> None:
    """Remove a test project whatever state it is in (cleanup after failures)."""
    subprocess.run(
        ["docker", "compose", "-p", name, "down", "--remove-orphans", "-t", "1"],
        capture_output=True,
        check=False,
    )


def project_containers(name: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={name}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.split()


def project_networks(name: str) -> list[str]:
    out = subprocess.run(
        ["docker", "network", "ls", "-q", "--filter", f"label=com.docker.compose.project={name}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.split()


def inspect_container(container: str, fmt: str, host: str | None = None) -> str:
    cmd = ["docker", *(["-H", host] if host else []), "inspect", "-f", fmt, container]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def kill_container(container: str, host: str | None = None) -> None:
    """docker kill, saying why when it cannot. A container restarting after a crash (e.g. the
    kernel's OOM killer on a busy machine) cannot be killed until it runs again, so wait for
    that. When dockerd sends SIGKILL but gives up waiting for the exit event (a vLLM engine with
    many threads and a large address space can take longer to reap on a busy 2-core machine),
    the kill was delivered: wait for the process to be gone instead of failing. ``host``: the
    Docker engine to use (``docker -H``; None: the default one)."""
    deadline = time.monotonic() + 120
    while (
        inspect_container(container, "{{.State.Status}}", host) == "restarting"
        and time.monotonic() < deadline
    ):
        time.sleep(1)
    pid = inspect_container(container, "{{.State.Pid}}", host)
    done = subprocess.run(
        ["docker", *(["-H", host] if host else []), "kill", container],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 and "did not receive an exit event" in done.stderr:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if inspect_container(container, "{{.State.Status}}", host) != "running":
                return
            if inspect_container(container, "{{.State.Pid}}", host) != pid:
                return
            time.sleep(1)
    state = inspect_container(
        container, "{{.State.Status}} oom={{.State.OOMKilled}} restarts={{.RestartCount}}", host
    )
    assert done.returncode == 0, f"docker kill {container}: {done.stderr.strip()} ({state})"
