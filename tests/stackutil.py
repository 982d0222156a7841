"""Stack files and model folders built on the fly for tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

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


def deploy_record(stack_path: Path):  # type: ignore[no-untyped-def]
    """Plan ``stack_path`` and write the deployment record `kit up` would leave, into the state
    folder (set KIT_STATE_DIR first). For tests whose running services are engine doubles the
    test started itself: the commands after `up` find them through the record."""
    from kit import record
    from kit.engine import project_folder
    from kit.plan import build_plan
    from kit.spec import load_stack

    plan = build_plan(load_stack(stack_path))
    record.write(project_folder(plan.stack.name), plan)
    return plan
