"""Helpers for tests over two Docker engines on this machine: the first (the default engine) and
the second one scripts/docker-up-second.sh starts, each standing for a host.

Ports of these tests (this issue's range, 19400-19499): the Ray cluster 19400-19466, the real
two-host stack 19470-19472, the engine-double stacks 19480-19499.
"""

from __future__ import annotations

import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockerutil import in_ci

DOCKER2_HOST = os.environ.get("KIT_DOCKER2_HOST", "unix:///run/kit-docker2/docker.sock")
#: the same second engine over tcp + TLS, and the folder of its certificates (ca.pem, cert.pem,
#: key.pem: the client's), both from scripts/docker-up-second.sh
DOCKER2_TCP = os.environ.get("KIT_DOCKER2_TCP", "tcp://127.0.0.1:29200")
DOCKER2_TLS = Path(os.environ.get("KIT_DOCKER2_TLS", "/var/lib/kit-docker2-tls"))
#: ... and over ssh (an sshd on 127.0.0.1 whose sessions reach it: scripts/ssh-up-second.sh)
DOCKER2_SSH = os.environ.get("KIT_DOCKER2_SSH", "ssh://kit-docker2")
REPO = Path(__file__).resolve().parent.parent
#: host b's address as containers of the first engine reach it: the second engine's bridge
#: (scripts/docker-up-second.sh)
B_ADDRESS = os.environ.get("KIT_DOCKER2_BRIDGE_CIDR", "10.213.0.1/24").split("/")[0]


def successes(address: str, port: int) -> float:
    """Requests a replica finished (vLLM's own /metrics, also the double's, on its published
    port)."""
    with urllib.request.urlopen(f"http://{address}:{port}/metrics", timeout=10) as r:
        body = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith("vllm:request_success_total{")
    )


def docker(host: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = ["docker", *(["-H", host] if host else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def engines_problem(images: tuple[str, ...]) -> str | None:
    """Why the two-engine tests cannot run here (None: they can)."""
    for host, label in ((None, "the first engine"), (DOCKER2_HOST, "the second engine")):
        if docker(host, "info").returncode:
            fix = "scripts/docker-up.sh" if host is None else "make engine2"
            return f"{label} ({host or 'default'}) does not answer (run {fix})"
        for image in images:
            if docker(host, "image", "inspect", image).returncode:
                return f"image {image} missing in {label} (run make engine2)"
    return None


def need_engines(*images: str) -> None:
    """Skip locally, FAIL in CI, when the two engines (with ``images``) are not here."""
    why = engines_problem(images)
    if why:
        if in_ci():
            pytest.fail(f"the two-engine tests must run in CI: {why}")
        pytest.skip(why)


def containers(host: str | None, project: str) -> list[str]:
    """Names of compose project ``project``'s containers on an engine (stopped ones too)."""
    label = f"label=com.docker.compose.project={project}"
    res = docker(host, "ps", "-a", "--format", "{{.Names}}", "--filter", label)
    return sorted(res.stdout.split())


def networks(host: str | None, project: str) -> list[str]:
    res = docker(
        host, "network", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}"
    )
    return res.stdout.split()


def cleanup(project: str) -> None:
    """Remove a test project from both engines, whatever state it is in."""
    for host in (None, DOCKER2_HOST):
        names = containers(host, project)
        if names:
            docker(host, "rm", "-f", *names)
        for net in networks(host, project):
            docker(host, "network", "rm", net)


def two_hosts(**extra: Any) -> dict[str, Any]:
    """The ``hosts:`` section of two hosts on this machine: a (first engine), b (second)."""
    base = {"gpus": 2, "gpu_memory_gib": 8, "address": "127.0.0.1"}
    return {
        "a": {**base, **extra.get("a", {})},
        "b": {**base, "docker": DOCKER2_HOST, **extra.get("b", {})},
    }


def write_stack(folder: Path, name: str, data: dict[str, Any]) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **data}, sort_keys=False))
    return path
