"""`kit up --pull` end to end: the real `huggingface_hub` client pulls the real small models
(SmolLM2-135M-Instruct, all-MiniLM-L6-v2) from a local DOUBLE of the hub's HTTP API
(tests/hubdouble.py, serving the real-engine tier's model folders: no hub is reachable here)
into an empty model root, and the REAL vLLM 0.32.0 (CPU build) serves what was pulled.

Needs `make real-image`. Locally without it this skips; with CI=true it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hubdouble import HubDouble

from dockerutil import compose_down, free_port, in_ci, project_containers
from kit import hub_lock
from kit.cli import cli

REPO = Path(__file__).resolve().parents[2]
REAL_IMAGE = os.environ.get("KIT_REAL_IMAGE", "kit-real-vllm-cpu:0.32.0")
MODELS = Path(os.environ.get("KIT_REAL_MODEL_ROOT", "/var/cache/kit-real/models"))
SOURCES = {  # hub id -> the real folder the double serves it from
    "HuggingFaceTB/SmolLM2-135M-Instruct": MODELS / "smollm2-135m-instruct",
    "sentence-transformers/all-MiniLM-L6-v2": MODELS / "all-minilm-l6-v2",
}

pytestmark = pytest.mark.real


@pytest.fixture
def real_image(docker_engine) -> str:
    problems = []
    if subprocess.run(["docker", "image", "inspect", REAL_IMAGE], capture_output=True).returncode:
        problems.append(f"image {REAL_IMAGE} missing")
    problems += [
        f"model {p} missing" for p in SOURCES.values() if not (p / "config.json").is_file()
    ]
    if problems:
        why = "; ".join(problems) + " (run `make real-image`)"
        if in_ci():
            pytest.fail(f"the real-engine tier is required in CI: {why}")
        pytest.skip(why)
    return REAL_IMAGE


def test_up_pull_fetches_the_models_and_the_real_engine_serves_them(
    real_image, tmp_path, monkeypatch
):
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    hub = HubDouble().start()
    for repo, folder in SOURCES.items():
        hub.add_repo(repo, folder)
    data = yaml.safe_load((REPO / "stacks" / "real-cpu.yaml").read_text())
    name = f"kit-pull-{uuid.uuid4().hex[:8]}"
    data["name"] = name
    data["defaults"]["model_root"] = str(tmp_path / "models")  # empty: everything is pulled
    data["defaults"]["hf_endpoint"] = hub.endpoint
    data["services"] = {k: v for k, v in data["services"].items() if k in ("chat", "embed")}
    data["services"]["chat"]["pull"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    data["services"]["embed"]["pull"] = {"repo": "sentence-transformers/all-MiniLM-L6-v2"}
    for svc in data["services"].values():
        svc["port"] = free_port()
    stack = tmp_path / f"{name}.yaml"
    stack.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        res = CliRunner().invoke(cli, ["up", str(stack), "--pull", "--image", real_image])
        assert res.exit_code == 0, res.output
        assert "fetched   smollm2-135m-instruct: HuggingFaceTB/SmolLM2-135M-Instruct" in res.output
        assert "is ready after" in res.output
        lock = hub_lock.read(tmp_path / f"{name}.lock.json")
        for key, (repo, src) in zip(("smollm2-135m-instruct", "all-minilm-l6-v2"), SOURCES.items(),
                                    strict=True):  # fmt: skip
            folder = tmp_path / "models" / key
            assert lock[key].source.repo == repo
            marker = json.loads((folder / ".kit-pull.json").read_text())
            assert marker["commit"] == lock[key].commit
            for f in lock[key].files:  # every pulled byte is the real model's
                assert (folder / f.path).read_bytes() == (src / f.path).read_bytes()
        # only what vLLM reads came over: no README, no data_config.json
        assert not (tmp_path / "models/all-minilm-l6-v2/README.md").exists()
        smoke = CliRunner().invoke(cli, ["smoke", str(stack)])
        assert smoke.exit_code == 0, smoke.output
        assert "8 passed, 0 failed" in smoke.output
        down = CliRunner().invoke(cli, ["down", str(stack)])
        assert down.exit_code == 0, down.output
        assert project_containers(name) == []
    finally:
        compose_down(name)
        hub.stop()
