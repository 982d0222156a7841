"""`kit watch` on two REAL Docker engines of this machine (the default one and the second one of
scripts/docker-up-second.sh, each standing for a host): a model over both hosts, served by the
engine double (NOT vLLM: it plays vLLM's native multi-node launch, a lost node kills the head;
a real multi-node vLLM cannot run on these CPUs), loses its worker while serving; the watcher
names the host and the cause and removes the service on both engines, the other services stay.
Skips locally without the second engine (`make engine2`); fails in CI.

Ports of this file: 29300-29399.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from multihostutil import DOCKER2_HOST, cleanup, containers, docker, need_engines, two_hosts
from multihostutil import write_stack as write

from kit.cli import cli

SIM_MODELS = Path(__file__).resolve().parents[2] / "stacks" / "sim-models"
DOUBLE = "kit-engine-double:dev"

pytestmark = pytest.mark.docker


def kit(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def load(seconds: float, **env: str) -> dict[str, dict[str, str]]:
    return {"env": {"KIT_DOUBLE_LOAD_SECONDS": str(seconds), **env}}


@pytest.fixture
def stack(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    need_engines(DOUBLE)
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    name = f"kit-mw-{uuid.uuid4().hex[:6]}"
    v = {"KIT_DOUBLE_VLLM_VERSION": "0.32.0"}
    path = write(tmp_path, name, {
        "hosts": two_hosts(a={"gpus": 3, "gpu_memory_gib": 24}, b={"gpus": 3, "gpu_memory_gib": 24}),
        "defaults": {"image": "vllm/vllm-openai:v0.32.0", "model_root": str(SIM_MODELS)},
        "services": {
            "big": {"kind": "chat", "model": "tiny-llm", "served_name": "big", "hosts": ["a", "b"],
                    "gpus": [0, 1], "tensor_parallel_size": 2, "pipeline_parallel_size": 2,
                    "port": 29300, "multinode": {"backend": "native", "port": 29301},
                    **load(0.5, **v)},
            "llm": {"kind": "chat", "model": "tiny-llm", "host": "a", "gpus": [2], "port": 29302,
                    "max_model_len": 8192, **load(0.5, **v)},
            "embed": {"kind": "embed", "model": "tiny-embed", "host": "b", "gpus": [2],
                      "port": 29303, **load(0.5, **v)},
        },
    })  # fmt: skip
    yield path
    cleanup(name)


def running(host: str | None, container: str) -> bool:
    res = docker(host, "inspect", "-f", "{{.State.Status}}", container)
    return res.stdout.strip() == "running"


def test_a_worker_lost_while_serving_is_diagnosed_and_removed_on_both_engines(stack, tmp_path):
    name = stack.stem
    res = kit("up", str(stack), "--image", DOUBLE)
    assert res.exit_code == 0, res.output + res.stderr
    log = tmp_path / "watch.log"
    env = {"KIT_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"}
    with log.open("w") as out:
        watch = subprocess.Popen(
            [sys.executable, "-m", "kit", "watch", name, "--interval", "0.5", "--timeout", "120"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while "watching big on every host" not in log.read_text():
                assert time.monotonic() < deadline and watch.poll() is None, log.read_text()
                time.sleep(0.1)
            # the watcher looks a few times at a healthy service and leaves it alone
            time.sleep(1.5)
            assert watch.poll() is None, log.read_text()
            assert running(None, f"{name}-big-1") and running(DOCKER2_HOST, f"{name}-big-node1-1")
            killed_at = time.monotonic()
            docker(DOCKER2_HOST, "kill", f"{name}-big-node1-1")
            assert watch.wait(timeout=60) == 5, log.read_text()
            took = time.monotonic() - killed_at
        finally:
            if watch.poll() is None:
                watch.kill()
    text = log.read_text()
    assert (
        "service 'big': lost native worker big-node1 on host 'b': exited (exit status 137, "
        "killed by signal 9) while serving" in text
    ), text
    assert "diagnosis: a node of the model over several hosts was lost" in text
    assert "service 'big': torn down on every host (a, b)" in text
    assert took < 30, f"the watcher took {took:.1f}s"
    # the service is gone on BOTH engines; the stack's other services still serve
    assert containers(None, name) == [f"{name}-llm-1"]
    assert containers(DOCKER2_HOST, name) == [f"{name}-embed-1"]
    assert running(None, f"{name}-llm-1") and running(DOCKER2_HOST, f"{name}-embed-1")
    with urllib.request.urlopen("http://127.0.0.1:29303/v1/models", timeout=5) as r:
        assert r.status == 200
    res = kit("status", str(stack))
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert "big: torn down on every host by `kit watch` at" in flat
    assert "after native worker big-node1 on host 'b' exited (exit status 137" in flat
    # `kit up` again serves it again, the others' containers untouched
    llm_id = docker(None, "inspect", "-f", "{{.Id}}", f"{name}-llm-1").stdout
    res = kit("up", str(stack), "--image", DOUBLE)
    assert res.exit_code == 0, res.output + res.stderr
    assert running(None, f"{name}-big-1") and running(DOCKER2_HOST, f"{name}-big-node1-1")
    assert docker(None, "inspect", "-f", "{{.Id}}", f"{name}-llm-1").stdout == llm_id
    assert "torn down" not in kit("status", str(stack)).output
    assert kit("down", str(stack)).exit_code == 0
    for host in (None, DOCKER2_HOST):
        assert containers(host, name) == []
