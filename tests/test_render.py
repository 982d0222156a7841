"""Rendering: golden files for the shipped stacks, and the properties every render keeps."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import jinja2
import pytest
import yaml

from kit.jinja_env import environment
from kit.plan import build_plan
from kit.render import RenderOptions, render_compose
from kit.spec import list_stacks, load_stack

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden"
# sim-* and real-* stacks point at folders on this machine: their renders depend on it
SHIPPED = [p for p in list_stacks(REPO / "stacks") if not p.stem.startswith(("sim-", "real-"))]
# a stack over several hosts has one compose file per host (golden in tests/test_hosts.py)
SHIPPED = [p for p in SHIPPED if load_stack(p).hosts is None]


@pytest.fixture(autouse=True)
def fixed_home(monkeypatch):
    """Stacks may name ~/...; golden files must not depend on who renders them."""
    monkeypatch.setenv("HOME", "/home/operator")


def render(path: Path, **opts) -> str:
    return render_compose(build_plan(load_stack(path)), RenderOptions(**opts))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_golden(path: Path):
    text = render(path)
    golden = GOLDEN / f"{path.stem}.yaml"
    if os.environ.get("KIT_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"missing {golden}: run KIT_UPDATE_GOLDEN=1 pytest {__file__}"
    expected = golden.read_text()
    diff = "".join(
        difflib.unified_diff(expected.splitlines(True), text.splitlines(True), "golden", "render")
    )
    assert text == expected, f"render differs from {golden.name}:\n{diff}"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_render_properties(path: Path):
    text = render(path)
    assert text == render(path), "deterministic"
    plan = build_plan(load_stack(path))
    doc = yaml.safe_load(text)
    assert doc["name"] == plan.stack.name
    assert "privileged" not in text
    assert "CUDA_VISIBLE_DEVICES" not in text
    assert "latest" not in text
    for s in plan.services:
        svc = doc["services"][s.name]
        assert svc["entrypoint"] == ["vllm", "serve"]
        assert svc["command"] == list(s.engine_args)
        assert svc["command"][0] == s.model_arg
        (dev,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert dev == {
            "driver": "nvidia",
            "device_ids": [str(g) for g in s.gpus],
            "capabilities": ["gpu"],
        }
        (port,) = svc["ports"]
        assert port == {
            "target": 8000,
            "published": str(s.port),
            "host_ip": "127.0.0.1",
            "protocol": "tcp",
        }
        assert svc["ipc"] == "host"
        model_mounts = [v for v in svc["volumes"] if v["target"] == s.model_arg]
        if s.model_host_path:
            assert model_mounts == [
                {
                    "type": "bind",
                    "source": s.model_host_path,
                    "target": s.model_arg,
                    "read_only": True,
                }
            ]
        assert svc["healthcheck"]["test"][:2] == ["CMD", "python3"]
        assert "/health" in svc["healthcheck"]["test"][-1]
        assert svc["healthcheck"]["start_period"] == f"{s.startup_timeout}s"
        assert svc.get("depends_on", {}) == {
            d: {"condition": "service_healthy"} for d in s.depends_on
        }
        assert svc["logging"]["options"] == {"max-size": "100m", "max-file": "5"}
        assert svc["restart"] == "unless-stopped"


def test_api_key_is_referenced_never_written(stack_file, tmp_path):
    secret = "sk-do-not-print-0123456789"
    env = tmp_path / "keys.env"
    env.write_text(f"VLLM_API_KEY={secret}\n")
    text = render(stack_file({"defaults": {"api_key_env_file": "keys.env"}}))
    assert secret not in text
    doc = yaml.safe_load(text)
    assert doc["services"]["llm"]["env_file"] == [{"path": str(env), "required": True}]


def test_bind_address_from_stack(stack_file):
    doc = yaml.safe_load(render(stack_file({"defaults": {"bind_address": "0.0.0.0"}})))
    assert doc["services"]["llm"]["ports"][0]["host_ip"] == "0.0.0.0"


def test_shm_size_instead_of_ipc_host(stack_file):
    doc = yaml.safe_load(render(stack_file({"defaults": {"ipc": "private", "shm_size": "64g"}})))
    svc = doc["services"]["llm"]
    assert (svc["ipc"], svc["shm_size"]) == ("private", "64g")


def test_image_swap_changes_only_images(stack_file):
    path = REPO / "stacks" / "source-notes.yaml"
    a = render(path).splitlines()
    b = render(path, image="kit-engine-double:dev").splitlines()
    changed = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
    assert changed and all(
        x.strip().startswith("image:") and "kit-engine-double:dev" in y for x, y in changed
    )


def test_values_that_look_like_yaml_stay_strings(stack_file):
    doc = yaml.safe_load(
        render(
            stack_file(
                {
                    "services": {
                        "llm": {"env": {"A": "yes", "B": "0123", "C": "a: b"}, "served_name": "on"}
                    }
                }
            )
        )
    )
    env = doc["services"]["llm"]["environment"]
    assert (env["A"], env["B"], env["C"]) == ("yes", "0123", "a: b")
    assert doc["services"]["llm"]["command"][2] == "on"


def test_templates_are_strict(tmp_path):
    (tmp_path / "t.j2").write_text("{{ missing }}")
    with pytest.raises(jinja2.UndefinedError):
        environment(tmp_path).get_template("t.j2").render()
