"""Shared test helpers: stack files and model folders built on the fly."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
GIB = 1024**3

BASE_STACK: dict[str, Any] = {
    "host": {"gpus": 8, "gpu_memory_gib": 80},
    "defaults": {"image": "vllm/vllm-openai:v0.11.0", "vllm_version": "0.11.0"},
    "services": {
        "llm": {"kind": "chat", "model": "org/llm", "gpus": [0, 1, 2, 3], "port": 9001},
    },
}


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def write_model(
    folder: Path,
    *,
    heads: int = 32,
    kv_heads: int = 8,
    hidden: int = 4096,
    layers: int = 32,
    max_pos: int = 32768,
    weights_gib: float | None = 16.0,
    auto_map: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A model folder with a config.json and a safetensors index (no real weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "max_position_embeddings": max_pos,
        "torch_dtype": "bfloat16",
        "vocab_size": 32000,
        "intermediate_size": 4 * hidden,
    }
    if auto_map:
        cfg["auto_map"] = {"AutoModel": "custom.Model"}
    cfg.update(extra or {})
    (folder / "config.json").write_text(json.dumps(cfg))
    if weights_gib is not None:
        index = {"metadata": {"total_size": int(weights_gib * GIB)}, "weight_map": {}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


@pytest.fixture
def stack_file(tmp_path: Path):
    """Write a stack (BASE_STACK merged with a patch) and return its path."""

    def make(
        patch: dict[str, Any] | None = None,
        *,
        services: dict[str, Any] | None = None,
        name: str = "t",
        raw: str | None = None,
    ) -> Path:
        path = tmp_path / f"{name}.yaml"
        if raw is not None:
            path.write_text(raw)
            return path
        data = deep_merge(BASE_STACK, patch or {})
        if services is not None:
            data["services"] = services
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return make


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


# --- Docker-backed tests: never skipped in CI ------------------------------------------------

DOUBLE_IMAGE = os.environ.get("KIT_DOUBLE_IMAGE", "kit-engine-double:dev")


def docker_problem() -> str | None:
    """Why Docker-backed tests cannot run here, or None."""
    import subprocess

    from kit.engine import engine_available

    why = engine_available()
    if why:
        return f"{why} (run `make engine`)"
    probe = subprocess.run(
        ["docker", "image", "inspect", DOUBLE_IMAGE], capture_output=True, check=False
    )
    if probe.returncode != 0:
        return f"image {DOUBLE_IMAGE} missing (run `make double-image`)"
    return None


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The engine double image name; skips locally without Docker, FAILS in CI."""
    why = docker_problem()
    if why:
        if in_ci():
            pytest.fail(f"Docker is required in CI: {why}")
        pytest.skip(f"Docker not available: {why}")
    return DOUBLE_IMAGE


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "docker_engine" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.docker)


def pytest_sessionfinish(session, exitstatus):
    """In CI a skipped test is a failure: integration tests must really run there."""
    if not in_ci():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped:
        reporter.write_line(f"CI: {skipped} test(s) skipped; skips are failures in CI", red=True)
        session.exitstatus = 1
