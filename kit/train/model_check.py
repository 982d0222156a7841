"""A base model's architecture as training sees it: its linear modules (the places a LoRA
adapter can go), parameter count and shape, read from the safetensors headers and config.json
without loading a weight.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: PEFT's shorthand for every linear layer except the output head
ALL_LINEAR = "all-linear"
_HEADER_MAX = 100 * 1024 * 1024


class ArchitectureUnreadable(Exception):
    """No config.json or no safetensors header to read here."""


@dataclass(frozen=True)
class Architecture:
    #: module path (tensor name without ``.weight``) -> (out_features, in_features), 2-D weights
    linear: dict[str, tuple[int, int]]
    params: int
    hidden_size: int
    num_layers: int
    num_heads: int
    vocab_size: int
    model_type: str | None
    tie_word_embeddings: bool

    def matches(self, target: str) -> list[str]:
        """Module paths PEFT would adapt for ``target`` (a name, or a dotted suffix)."""
        if target == ALL_LINEAR:
            return [m for m in self.linear if not _is_head(m)]
        return [m for m in self.linear if m == target or m.endswith("." + target)]

    def leaf_names(self) -> list[str]:
        """Distinct last components of the linear modules (q_proj, v_proj, ...)."""
        return sorted({m.rsplit(".", 1)[-1] for m in self.linear if not _is_head(m)})

    def lora_params(self, targets: tuple[str, ...], r: int) -> int:
        """Trainable parameters of a rank-``r`` adapter on ``targets``."""
        mods = {m for t in targets for m in self.matches(t)}
        return sum(r * (self.linear[m][0] + self.linear[m][1]) for m in mods)


def _is_head(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return last in ("lm_head", "embed_tokens", "wte", "embed_out", "output")


def _header(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ArchitectureUnreadable(f"{path} is not a safetensors file")
        (size,) = struct.unpack("<Q", raw)
        if size <= 0 or size > _HEADER_MAX:
            raise ArchitectureUnreadable(f"{path} has no valid safetensors header")
        data = json.loads(f.read(size))
    if not isinstance(data, dict):
        raise ArchitectureUnreadable(f"{path} has no valid safetensors header")
    return data


def read_architecture(folder: Path) -> Architecture:
    """Read ``folder``'s config.json and safetensors headers (raises ArchitectureUnreadable)."""
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArchitectureUnreadable(f"cannot read {folder / 'config.json'}: {exc}") from None
    if not isinstance(cfg, dict):
        raise ArchitectureUnreadable(f"{folder / 'config.json'} is not a JSON object")
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ArchitectureUnreadable(f"no *.safetensors files in {folder}")
    linear: dict[str, tuple[int, int]] = {}
    params = 0
    try:
        for f in files:
            for name, meta in _header(f).items():
                if name == "__metadata__" or not isinstance(meta, dict):
                    continue
                shape = meta.get("shape") or []
                n = 1
                for d in shape:
                    n *= int(d)
                params += n
                if name.endswith(".weight") and len(shape) == 2:
                    linear[name[: -len(".weight")]] = (int(shape[0]), int(shape[1]))
    except (OSError, ValueError, TypeError) as exc:
        raise ArchitectureUnreadable(
            f"cannot read the safetensors headers in {folder}: {exc}"
        ) from None

    def num(*keys: str) -> int:
        for k in keys:
            v = text.get(k)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
        return 0

    return Architecture(
        linear=linear,
        params=params,
        hidden_size=num("hidden_size", "d_model", "n_embd"),
        num_layers=num("num_hidden_layers", "n_layer", "num_layers"),
        num_heads=num("num_attention_heads", "n_head"),
        vocab_size=num("vocab_size"),
        model_type=text.get("model_type") if isinstance(text.get("model_type"), str) else None,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
    )
