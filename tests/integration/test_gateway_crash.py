"""A gateway that crashes at start fails `kit up` at once, on the real Docker engine: the real
LiteLLM image (scripts/build-gateway-image.sh) given the configuration the kit renders with one
value broken by a TEST-ONLY override (an unknown routing strategy, which LiteLLM refuses at
start-up), in front of the ENGINE DOUBLE loading slowly (KIT_DOUBLE_LOAD_SECONDS).

Checked: `kit up` fails long before the engines would be ready, names the gateway, shows its
last log lines and the diagnosed cause, and leaves no container, network or record behind.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from dockerutil import SIM_MODELS, compose_down, in_ci, project_containers, project_networks
from kit import gateway_render
from kit.cli import cli
from kit.record import find

REPO = Path(__file__).resolve().parents[2]
GATEWAY_IMAGE = os.environ.get("KIT_GATEWAY_IMAGE", "kit-gateway-litellm:1.106.12")
GATEWAY_PORT = 29531
LOAD_S = 240  # the engines' load time: the failure must come well before it


@pytest.fixture
def stack(docker_engine, tmp_path, monkeypatch):
    if subprocess.run(
        ["docker", "image", "inspect", GATEWAY_IMAGE], capture_output=True
    ).returncode:
        why = f"image missing: {GATEWAY_IMAGE} (run `make gateway-image`)"
        if in_ci():
            pytest.fail(why)
        pytest.skip(why)
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    data = yaml.safe_load((REPO / "stacks" / "sim-gateway.yaml").read_text())
    data["name"] = f"kit-gwcrash-{uuid.uuid4().hex[:8]}"
    data["defaults"]["model_root"] = str(SIM_MODELS)
    data["gateway"]["port"] = GATEWAY_PORT
    data.pop("observability", None)
    del data["services"]["rerank"]
    for svc in data["services"].values():
        svc["env"]["KIT_DOUBLE_LOAD_SECONDS"] = str(LOAD_S)
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        yield path, data["name"]
    finally:
        compose_down(data["name"])


def test_gateway_crash_at_start_fails_up_before_the_engines_load(stack, docker_engine, monkeypatch):
    path, name = stack
    render = gateway_render.litellm_config

    def broken(plan) -> str:  # TEST-ONLY: the kit's config with one value LiteLLM refuses
        text, n = re.subn(r"routing_strategy: .*", 'routing_strategy: "no-such-strategy"',
                          render(plan))  # fmt: skip
        assert n == 1
        return text

    monkeypatch.setattr(gateway_render, "litellm_config", broken)
    t0 = time.monotonic()
    res = CliRunner().invoke(cli, ["up", str(path), "--image", docker_engine])
    took = time.monotonic() - t0
    out = res.output + (res.stderr if res.stderr_bytes is not None else "")
    assert res.exit_code != 0, out
    assert took < LOAD_S / 2, f"failed only after {took:.0f}s"
    assert "service 'gateway': container" in out and ("exited" in out or "restarted" in out)
    assert "last log lines" in out and "Application startup failed" in out
    assert "the gateway (LiteLLM) refused its configuration" in out
    assert "Invalid routing_strategy: 'no-such-strategy'" in out
    assert "removed what was started" in out
    assert project_containers(name) == [] and project_networks(name) == []
    assert find(str(path)) is None
