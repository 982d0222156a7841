"""Helpers for tests that look at the real Docker engine."""

from __future__ import annotations

import subprocess

from doubleutil import free_port

__all__ = ["free_port", "project_containers", "project_networks"]


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
