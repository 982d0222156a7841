"""Replicas of one model on two hosts behind the gateway, on two REAL Docker engines of this
machine (the default one: host a, with the gateway; the second one of
scripts/docker-up-second.sh: host b), with the real LiteLLM gateway image
(scripts/build-gateway-image.sh) in front of the ENGINE DOUBLE standing in for vLLM.

Host b's address is the second engine's bridge address (kit-br2, 10.213.0.1 by default): both
engines share this machine's kernel, so a port the second engine publishes on that address is
reached from the gateway's container on the first engine (measured; the machine's primary
address works too, but differs per machine).

Checked: `kit up` waits for both replicas (one per engine) and the gateway; `kit status` shows
each replica with its host; smoke through the gateway; requests through the gateway reach both
replicas; host b's replica killed -> the gateway keeps serving from host a; `kit down` empties
both engines. Ports 29400-29409 (this item's range: 29400-29499).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import openai
import pytest
from click.testing import CliRunner
from multihostutil import (
    B_ADDRESS,
    DOCKER2_HOST,
    cleanup,
    containers,
    docker,
    need_engines,
    networks,
    successes,
)
from multihostutil import write_stack as write

from kit.cli import cli

SIM_MODELS = Path(__file__).resolve().parents[2] / "stacks" / "sim-models"
DOUBLE = "kit-engine-double:dev"
GATEWAY_IMAGE = os.environ.get("KIT_GATEWAY_IMAGE", "kit-gateway-litellm:1.106.12")
GATEWAY_PORT, CHAT_PORT = 29400, 29401

pytestmark = pytest.mark.docker


def kit(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def stack(tmp_path, monkeypatch):
    need_engines(DOUBLE)
    if docker(None, "image", "inspect", GATEWAY_IMAGE).returncode:
        need_engines(GATEWAY_IMAGE)  # the same skip-locally / fail-in-CI rule
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    name = f"kit-gwmh-{uuid.uuid4().hex[:6]}"
    base = {"gpus": 2, "gpu_memory_gib": 24}
    path = write(tmp_path, name, {
        "hosts": {
            "a": {**base, "address": "127.0.0.1"},
            "b": {**base, "docker": DOCKER2_HOST, "address": B_ADDRESS},
        },
        "defaults": {"image": "vllm/vllm-openai:v0.11.0", "model_root": str(SIM_MODELS)},
        "gateway": {"port": GATEWAY_PORT, "image": GATEWAY_IMAGE, "cooldown": 60},
        "services": {
            "chat": {"kind": "chat", "model": "tiny-llm", "replicas": 2, "hosts": ["a", "b"],
                     "gpus": 1, "port": CHAT_PORT, "max_model_len": 4096,
                     "env": {"KIT_DOUBLE_LOAD_SECONDS": "1"}},
            # no port: reached on host a's stack network (probed inside its container)
            "embed": {"kind": "embed", "model": "tiny-embed", "host": "a", "gpus": [1],
                      "env": {"KIT_DOUBLE_LOAD_SECONDS": "0.5"}},
        },
    })  # fmt: skip
    try:
        yield path
    finally:
        cleanup(name)


def test_replicas_on_two_hosts_behind_the_gateway(stack):
    path, name = stack, stack.stem
    res = kit("up", str(path), "--image", DOUBLE)
    assert res.exit_code == 0, res.output + res.stderr
    for svc in ("chat-1", "chat-2", "embed"):
        assert f"{svc}: ready" in res.output
    assert f"gateway: ready at http://127.0.0.1:{GATEWAY_PORT}" in res.output
    assert containers(None, name) == [f"{name}-chat-1-1", f"{name}-embed-1", f"{name}-gateway-1"]
    assert containers(DOCKER2_HOST, name) == [f"{name}-chat-2-1"]
    # host b binds its engines to its address (never every interface by default)
    bound = docker(DOCKER2_HOST, "port", f"{name}-chat-2-1", "8000/tcp").stdout.split()
    assert bound == [f"{B_ADDRESS}:{CHAT_PORT + 1}"], bound

    res = kit("status", str(path))
    assert res.exit_code == 0, res.output
    rows = {ln.split()[0]: ln.split() for ln in res.output.splitlines() if " running" in ln}
    assert rows["chat-1"][1] == "a" and rows["chat-2"][1] == "b", res.output
    assert rows["embed"][1] == "a" and rows["gateway"][1] == "a", res.output
    assert "lists all 2" in res.output

    res = kit("smoke", str(path))
    assert res.exit_code == 0 and " 0 failed" in res.output, res.output

    # requests through the gateway reach both replicas
    local, remote = ("127.0.0.1", CHAT_PORT), (B_ADDRESS, CHAT_PORT + 1)
    before = {r: successes(*r) for r in (local, remote)}
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{GATEWAY_PORT}/v1", api_key="none")
    for i in range(16):
        out = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": f"hi {i}"}], max_tokens=4
        )
        assert out.choices[0].message.content
    served = {r: successes(*r) - before[r] for r in before}
    print("served per replica:", served)
    assert sum(served.values()) == 16 and min(served.values()) >= 1, served

    # host b's replica killed: the gateway keeps serving every request from host a
    assert docker(DOCKER2_HOST, "kill", f"{name}-chat-2-1").returncode == 0
    deadline = time.monotonic() + 30
    while docker(DOCKER2_HOST, "inspect", "-f", "{{.State.Running}}",
                 f"{name}-chat-2-1").stdout.strip() == "true":  # fmt: skip
        assert time.monotonic() < deadline, "the killed replica kept running"
        time.sleep(0.2)
    before_local = successes(*local)
    for i in range(8):
        out = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": f"again {i}"}], max_tokens=4
        )
        assert out.choices[0].message.content
    assert successes(*local) - before_local == 8

    res = kit("down", str(path))
    assert res.exit_code == 0, res.output + res.stderr
    for host in (None, DOCKER2_HOST):
        assert containers(host, name) == [] and networks(host, name) == []
