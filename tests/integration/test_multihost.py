"""A stack over two hosts, driven through the kit's commands on two REAL Docker engines of this
machine (the default one and the second one of scripts/docker-up-second.sh), with the engine
double standing in for vLLM (the double is taught vLLM's native multi-node launch: the head
waits for every node's ranks, a lost node kills the head). Skips locally without the second
engine (`make engine2`); fails in CI."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from multihostutil import (
    DOCKER2_HOST,
    cleanup,
    containers,
    docker,
    need_engines,
    networks,
    two_hosts,
)
from multihostutil import write_stack as write

from kit.cli import cli

SIM_MODELS = Path(__file__).resolve().parents[2] / "stacks" / "sim-models"
DOUBLE = "kit-engine-double:dev"

#: both engines are real Docker engines: never part of `make test-unit`
pytestmark = pytest.mark.docker


def kit(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """Write a two-host stack (engine double, sim models); remove it from both engines after."""
    need_engines(DOUBLE)
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    made: list[str] = []

    def make(services: dict[str, Any], *, version: str = "0.11.0", **hosts: Any) -> Path:
        name = f"kit-mh-{uuid.uuid4().hex[:6]}"
        made.append(name)
        return write(tmp_path, name, {
            "hosts": two_hosts(**{h: {"gpu_memory_gib": 24, **hosts.get(h, {})} for h in "ab"}),
            "defaults": {"image": f"vllm/vllm-openai:v{version}", "model_root": str(SIM_MODELS)},
            "services": services,
        })  # fmt: skip

    yield make
    for name in made:
        cleanup(name)


def load(seconds: float, **env: str) -> dict[str, dict[str, str]]:
    return {"env": {"KIT_DOUBLE_LOAD_SECONDS": str(seconds), **env}}


def test_services_on_two_engines_up_status_smoke_logs_down(project):
    path = project({
        "llm": {"kind": "chat", "model": "tiny-llm", "host": "a", "gpus": [0, 1], "port": 19480,
                "reasoning_parser": "qwen3", **load(1)},
        "embed": {"kind": "embed", "model": "tiny-embed", "host": "b", "gpus": [1], "port": 19481,
                  **load(0.5)},
        "rerank": {"kind": "rerank", "model": "tiny-rerank", "host": "b", "gpus": [1],
                   "port": 19482, **load(0.5)},
    })  # fmt: skip
    name = path.stem
    res = kit("up", str(path), "--image", DOUBLE)
    assert res.exit_code == 0, res.output + res.stderr
    assert containers(None, name) == [f"{name}-llm-1"]
    assert containers(DOCKER2_HOST, name) == [f"{name}-embed-1", f"{name}-rerank-1"]
    # rerank shares GPU 1 of host b with embed: started once embed was ready, on host b
    out = res.output
    assert out.index("embed: ready") < out.index("rerank: created")
    res = kit("status", str(path))
    assert res.exit_code == 0
    rows = {ln.split()[0]: ln.split() for ln in res.output.splitlines() if " running " in ln}
    assert {k: v[1:5] for k, v in rows.items()} == {
        "llm": ["a", "chat", "0,1", "0,1"],
        "embed": ["b", "embed", "1", "1"],
        "rerank": ["b", "rerank", "1", "1"],
    }
    res = kit("smoke", str(path))
    assert res.exit_code == 0 and "12 passed, 0 failed" in res.output, res.output
    res = kit("logs", str(path), "embed", "-n", "3")
    assert "==> host 'b' embed <==" in res.output and "Application startup complete" in res.output
    res = kit("down", str(path))
    assert res.exit_code == 0, res.output
    for host in (None, DOCKER2_HOST):
        assert containers(host, name) == [] and networks(host, name) == []


def test_a_failure_on_one_host_names_it_and_leaves_nothing_on_either(project):
    path = project({
        "llm": {"kind": "chat", "model": "tiny-llm", "host": "a", "gpus": [0], "port": 19483,
                "max_model_len": 8192,
                **load(30)},
        "embed": {"kind": "embed", "model": "tiny-embed", "host": "b", "gpus": [0], "port": 19484,
                  **load(0.5, KIT_DOUBLE_FAIL="oom")},
    })  # fmt: skip
    res = kit("up", str(path), "--image", DOUBLE)
    assert res.exit_code == 5, res.output + res.stderr
    # (restart policy unless-stopped: the engine may restart it first; either way it is over)
    assert re.search(r"service 'embed': container on host 'b' (exited|restarted)", res.stderr)
    assert "diagnosis: CUDA out of memory" in res.stderr
    assert "removed what was started" in res.stderr
    for host in (None, DOCKER2_HOST):
        assert containers(host, path.stem) == []


def test_an_engine_that_does_not_answer_is_named_before_anything_starts(project):
    path = project(
        {"llm": {"kind": "chat", "model": "tiny-llm", "host": "a", "gpus": [0], "port": 19485,
                 "max_model_len": 8192},
         "embed": {"kind": "embed", "model": "tiny-embed", "host": "b", "gpus": [0], "port": 19486}},
        b={"docker": "unix:///run/kit-no-such-engine.sock"},
    )  # fmt: skip
    res = kit("up", str(path), "--image", DOUBLE)
    assert res.exit_code == 4, res.output + res.stderr
    assert (
        "host 'b' (unix:///run/kit-no-such-engine.sock): the Docker engine does not answer"
        in res.stderr
    )
    assert containers(None, path.stem) == []


# --- one model over both hosts: vLLM's native recipe, played by the engine double ------------

NATIVE = {"kind": "chat", "model": "tiny-llm", "served_name": "big", "hosts": ["a", "b"],
          "gpus": [0, 1], "tensor_parallel_size": 2, "pipeline_parallel_size": 2, "port": 19490,
          "multinode": {"backend": "native", "port": 19491}}  # fmt: skip


def test_native_multinode_service_over_both_engines(project):
    # host b's part joins 3 s late: the head waits for it, and so does the kit
    path = project({"big": {**NATIVE, **load(1, KIT_DOUBLE_VLLM_VERSION="0.32.0",
                                             KIT_DOUBLE_JOIN_DELAY="3")}},
                   version="0.32.0")  # fmt: skip
    name = path.stem
    res = kit("up", str(path), "--image", DOUBLE)
    assert res.exit_code == 0, res.output + res.stderr
    # the kit waited for every rank of both hosts, then for the API
    out = res.output
    assert out.index("big: cluster: waiting for every node") < out.index("big: ready")
    assert containers(None, name) == [f"{name}-big-1"]
    assert containers(DOCKER2_HOST, name) == [f"{name}-big-node1-1"]
    res = kit("status", str(path))
    lines = [ln.split() for ln in res.output.splitlines() if "running" in ln]
    assert lines[0][:5] == ["big", "a+b", "chat", "0,1", "0,1"]
    assert lines[1][:7] == ["big", "(big-node1)", "b", "native", "worker", "0,1", "0,1"]
    res = kit("smoke", str(path))
    assert res.exit_code == 0 and "4 passed, 0 failed" in res.output, res.output
    res = kit("logs", str(path), "big", "-n", "200")
    assert "rank 3 in world size 4 is assigned" in res.output  # from host b's part
    assert "node 1 joined (2/2 nodes)" in res.output  # from the head on host a
    res = kit("down", str(path))
    assert res.exit_code == 0
    for host in (None, DOCKER2_HOST):
        assert containers(host, name) == [] and networks(host, name) == []


def test_native_worker_killed_while_loading_fails_fast_everywhere(project, tmp_path):
    path = project({"big": {**NATIVE, **load(60, KIT_DOUBLE_VLLM_VERSION="0.32.0")}},
                   version="0.32.0")  # fmt: skip
    name = path.stem
    log = tmp_path / "up.log"
    env = {"KIT_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"}
    with log.open("w") as out:
        up = subprocess.Popen([sys.executable, "-m", "kit", "up", str(path), "--image", DOUBLE],
                              stdout=out, stderr=subprocess.STDOUT, env=env)  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while "big: loading: port closed" not in log.read_text():
                assert time.monotonic() < deadline and up.poll() is None, log.read_text()
                time.sleep(0.1)
            killed_at = time.monotonic()
            docker(DOCKER2_HOST, "kill", f"{name}-big-node1-1")
            assert up.wait(timeout=60) == 5
            took = time.monotonic() - killed_at
        finally:
            if up.poll() is None:
                up.kill()
    text = log.read_text()
    assert took < 15, f"up took {took:.1f}s to notice; budget is the load time (60s)"
    assert (
        "service 'big': native worker big-node1 on host 'b' exited (exit status 137) while loading"
        in text
    )
    assert "diagnosis: a node of the model over several hosts was lost" in text
    assert "removed what was started" in text
    for host in (None, DOCKER2_HOST):
        assert containers(host, name) == []


def test_a_lost_node_while_serving_shows_in_status(project):
    path = project({"big": {**NATIVE, **load(0.5, KIT_DOUBLE_VLLM_VERSION="0.32.0")}},
                   version="0.32.0")  # fmt: skip
    name = path.stem
    assert kit("up", str(path), "--image", DOUBLE).exit_code == 0
    docker(DOCKER2_HOST, "kill", f"{name}-big-node1-1")
    deadline = time.monotonic() + 20
    while (
        docker(None, "inspect", "-f", "{{.State.Status}}", f"{name}-big-1").stdout.strip()
        != "exited"
    ):
        assert time.monotonic() < deadline, "the head kept running without its node"
        time.sleep(0.2)
    res = kit("status", str(path))
    assert "exited (1)" in res.output and "exited (137)" in res.output, res.output
    flat = " ".join(res.output.split())  # and what to do about it (kit.multinode_watch)
    assert "big: lost native worker big-node1 on host 'b' (exited (exit status 137" in flat
    assert f"`kit watch {name}` diagnoses it and removes it on every host" in flat
    res = kit("logs", str(path), "big", "-n", "20")
    assert "Connection closed by peer" in res.output
    assert kit("down", str(path)).exit_code == 0
    for host in (None, DOCKER2_HOST):
        assert containers(host, name) == []


def test_doctor_checks_each_hosts_engine(project):
    path = project(
        {"llm": {"kind": "chat", "model": "tiny-llm", "host": "a", "gpus": [0], "port": 19496,
                 "max_model_len": 8192},
         "embed": {"kind": "embed", "model": "tiny-embed", "host": "b", "gpus": [0], "port": 19497}},
    )  # fmt: skip
    res = kit("doctor", str(path))
    rows = [ln.split() for ln in res.output.splitlines()]
    engines = {r[0]: r[3] for r in rows if len(r) > 3 and r[1:3] == ["docker", "engine"]}
    assert engines == {"a:": "ok", "b:": "ok"}, res.output
    assert any(r[:3] == ["b:", "port", "19497"] and r[3] == "ok" for r in rows), res.output
    broken = project(
        {"llm": {"kind": "chat", "model": "tiny-llm", "host": "a", "gpus": [0], "port": 19498,
                 "max_model_len": 8192},
         "embed": {"kind": "embed", "model": "tiny-embed", "host": "b", "gpus": [0], "port": 19499}},
        b={"docker": "unix:///run/kit-no-such-engine.sock"},
    )  # fmt: skip
    res = kit("doctor", str(broken))
    assert res.exit_code == 1
    rows = [ln.split() for ln in res.output.splitlines()]
    assert any(r[:4] == ["b:", "docker", "engine", "fail"] for r in rows), res.output
