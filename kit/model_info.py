"""What a model folder on this machine says about the model: shape, weights, and fit.

Used by the planner when the model folder is readable here. Everything is an estimate meant to
catch impossible layouts before a 30-minute load fails, not to replace vLLM's profiler.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit import kinds

GIB = 1024**3

DTYPE_BYTES = {
    "float32": 4,
    "float": 4,
    "float16": 2,
    "half": 2,
    "bfloat16": 2,
    "float8_e4m3fn": 1,
    "fp8": 1,
    "int8": 1,
}


@dataclass(frozen=True)
class ModelInfo:
    path: str
    architecture: str | None
    num_attention_heads: int | None
    num_kv_heads: int | None
    head_dim: int | None
    num_layers: int | None
    hidden_size: int | None
    max_position_embeddings: int | None
    dtype_bytes: int
    weights_bytes: int | None
    weights_source: str
    #: MLA models (DeepSeek-V2/V3/R1) cache one latent per token per layer, not K and V per head
    mla_dim: int | None = None
    needs_remote_code: bool = False

    def kv_bytes_per_token(self, tp: int, pp: int, kv_dtype_bytes: int | None = None) -> int | None:
        """KV cache bytes one token needs on one GPU of a TP x PP group."""
        if self.num_layers is None:
            return None
        b = kv_dtype_bytes or self.dtype_bytes
        layers = math.ceil(self.num_layers / pp)
        if self.mla_dim is not None:
            return layers * self.mla_dim * b  # the latent is replicated on every TP rank
        if self.num_kv_heads is None or self.head_dim is None:
            return None
        heads_per_gpu = max(1, math.ceil(self.num_kv_heads / tp))
        return 2 * layers * heads_per_gpu * self.head_dim * b


@dataclass(frozen=True)
class FitEstimate:
    weights_gib: float
    kv_gib: float
    overhead_gib: float
    budget_gib: float
    tokens: int
    weights_source: str

    @property
    def needed_gib(self) -> float:
        return self.weights_gib + self.kv_gib + self.overhead_gib

    @property
    def excess_gib(self) -> float:
        return self.needed_gib - self.budget_gib

    @property
    def fits(self) -> bool:
        return self.excess_gib <= 0

    def describe(self) -> str:
        return (
            f"about {self.needed_gib:.1f} GiB per GPU (weights {self.weights_gib:.1f} "
            f"[{self.weights_source}] + KV cache for {self.tokens} tokens {self.kv_gib:.1f} "
            f"+ runtime {self.overhead_gib:.1f}) against {self.budget_gib:.1f} GiB"
        )


class ModelUnreadable(Exception):
    """The folder or its config.json can't be read here (a warning, not an error)."""


def read_model(folder: Path) -> ModelInfo:
    cfg_path = folder / "config.json"
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelUnreadable(f"{cfg_path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelUnreadable(f"cannot read {cfg_path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ModelUnreadable(f"{cfg_path} is not a JSON object")
    cfg = _text_config(raw)

    heads = _int(cfg, "num_attention_heads", "n_head", "num_heads")
    kv_heads = _int(cfg, "num_key_value_heads", "num_kv_heads", "n_head_kv") or heads
    hidden = _int(cfg, "hidden_size", "d_model", "n_embd")
    head_dim = _int(cfg, "head_dim") or (hidden // heads if hidden and heads else None)
    layers = _int(cfg, "num_hidden_layers", "n_layer", "num_layers")
    mla = None
    if _int(cfg, "kv_lora_rank"):
        mla = (_int(cfg, "kv_lora_rank") or 0) + (_int(cfg, "qk_rope_head_dim") or 0)
    dtype_name = str(cfg.get("torch_dtype") or cfg.get("dtype") or raw.get("torch_dtype") or "")
    dtype_bytes = DTYPE_BYTES.get(dtype_name, 2)
    if dtype_bytes == 4:
        dtype_bytes = 2  # vLLM's dtype=auto serves float32 checkpoints in half precision
    archs = raw.get("architectures")
    weights, source = _weights(folder, cfg, dtype_bytes)
    return ModelInfo(
        path=str(folder),
        architecture=archs[0] if isinstance(archs, list) and archs else None,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        num_layers=layers,
        hidden_size=hidden,
        max_position_embeddings=_int(cfg, "max_position_embeddings", "n_positions"),
        dtype_bytes=dtype_bytes,
        weights_bytes=weights,
        weights_source=source,
        mla_dim=mla,
        needs_remote_code=isinstance(raw.get("auto_map"), dict),
    )


def estimate_fit(
    info: ModelInfo,
    *,
    kind: str,
    tp: int,
    pp: int,
    tokens: int,
    gpu_memory_gib: float,
    fraction: float,
    dtype_bytes: int | None = None,
    kv_dtype_bytes: int | None = None,
) -> FitEstimate | None:
    """Per-GPU memory need of one replica against its budget; ``None`` if unknown."""
    if info.weights_bytes is None:
        return None
    scale = (
        (dtype_bytes / info.dtype_bytes) if dtype_bytes and info.weights_source == "config" else 1
    )
    weights = info.weights_bytes * scale / (tp * pp) / GIB
    kv_token = info.kv_bytes_per_token(tp, pp, kv_dtype_bytes)
    k = kinds.kind(kind)
    kv = (kv_token or 0) * tokens / GIB if k.generates else 0.0
    return FitEstimate(
        weights_gib=weights,
        kv_gib=kv,
        overhead_gib=k.runtime_gib,
        budget_gib=gpu_memory_gib * fraction,
        tokens=tokens,
        weights_source=info.weights_source,
    )


# --- helpers -------------------------------------------------------------------------------


def _text_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Multimodal configs nest the language model's shape under text_config/llm_config."""
    for key in ("text_config", "llm_config", "language_config"):
        sub = raw.get(key)
        if (
            isinstance(sub, dict)
            and "num_attention_heads" in sub
            and "num_attention_heads" not in raw
        ):
            return sub
    return raw


def _int(cfg: dict[str, Any], *keys: str) -> int | None:
    for k in keys:
        v = cfg.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def _weights(folder: Path, cfg: dict[str, Any], dtype_bytes: int) -> tuple[int | None, str]:
    index = folder / "model.safetensors.index.json"
    try:
        total = json.loads(index.read_text(encoding="utf-8"))["metadata"]["total_size"]
        if isinstance(total, int) and total > 0:
            return total, "safetensors index"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for pattern, label in (("*.safetensors", "safetensors"), ("*.bin", "checkpoint files")):
        files = sorted(folder.glob(pattern))
        if files:
            try:
                return sum(f.stat().st_size for f in files), label
            except OSError:
                continue
    params = _params_from_config(cfg)
    if params is None:
        return None, "unknown"
    return params * dtype_bytes, "config"


def _params_from_config(cfg: dict[str, Any]) -> int | None:
    """Rough parameter count of a decoder from its shape (dense or MoE)."""
    hidden = _int(cfg, "hidden_size")
    layers = _int(cfg, "num_hidden_layers")
    vocab = _int(cfg, "vocab_size")
    heads = _int(cfg, "num_attention_heads")
    if not (hidden and layers and vocab and heads):
        return None
    kv_heads = _int(cfg, "num_key_value_heads") or heads
    head_dim = _int(cfg, "head_dim") or hidden // heads
    attn = hidden * head_dim * (2 * heads + 2 * kv_heads)
    inter = _int(cfg, "intermediate_size") or 4 * hidden
    experts = _int(cfg, "num_experts", "n_routed_experts", "num_local_experts")
    if experts:
        moe_inter = _int(cfg, "moe_intermediate_size") or inter
        shared = _int(cfg, "n_shared_experts") or 0
        mlp = 3 * hidden * moe_inter * (experts + shared)
    else:
        mlp = 3 * hidden * inter
    tied = cfg.get("tie_word_embeddings") is True
    return layers * (attn + mlp) + vocab * hidden * (1 if tied else 2)
