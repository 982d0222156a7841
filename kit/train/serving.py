"""Serving the jobs' adapters from the stack's own vLLM.

A chat service that a job names in ``serve`` gets ``--enable-lora``, ``--max-lora-rank``,
``--max-loras`` and one ``--lora-modules NAME=/adapters/NAME`` per finished adapter, with
adapters_root mounted read-only at ``/adapters``. Those flags are the kit's for such a service
(``extra_args`` may not set them: :data:`kit.command.OWNED_FLAGS`). After a job, the new
adapter is loaded into the running service with ``POST /v1/load_lora_adapter`` when the
service allows runtime updates (``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` in its env), else
the service is restarted.

What the vLLM versions of the kit's table say (released source, 0.8.5 to 0.32.0):
``--enable-lora``, ``--lora-modules name=path``, ``--max-lora-rank``, ``--max-loras`` and the
runtime endpoint ``/v1/load_lora_adapter`` (body ``lora_name``, ``lora_path``) with
``VLLM_ALLOW_RUNTIME_LORA_UPDATING`` exist in every one; ``--max-lora-rank`` takes only
8, 16, 32, 64, 128, 256, 320 or 512 up to 0.11, and also 1 from 0.13.0.
"""

from __future__ import annotations

import json
from pathlib import Path

from kit import wire
from kit.train.jobplan import ADAPTERS_MOUNT
from kit.vllm_versions import Version

RUNTIME_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"
LOAD_PATH = wire.LOAD_LORA
UNLOAD_PATH = wire.UNLOAD_LORA
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def max_lora_ranks(version: Version) -> tuple[int, ...]:
    """The values ``--max-lora-rank`` accepts in ``version``."""
    ranks = (8, 16, 32, 64, 128, 256, 320, 512)
    return (1, *ranks) if version >= Version.parse("0.13.0") else ranks


def rank_for(wanted: int, version: Version) -> int | None:
    """The smallest accepted ``--max-lora-rank`` of at least ``wanted`` (None: too big)."""
    return next((r for r in max_lora_ranks(version) if r >= wanted), None)


def finished(adapter_dir: Path) -> bool:
    """An adapter folder a job published completely."""
    return all((adapter_dir / f).is_file() for f in ADAPTER_FILES)


def adapter_rank(adapter_dir: Path) -> int | None:
    try:
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
        r = cfg.get("r")
        return r if isinstance(r, int) else None
    except (OSError, ValueError):
        return None


def lora_args(rank: int, slots: int, adapters: list[str]) -> tuple[str, ...]:
    """The service's LoRA flags (appended to its command line)."""
    args = ["--enable-lora", "--max-lora-rank", str(rank), "--max-loras", str(max(1, slots))]
    if adapters:
        args += ["--lora-modules", *(f"{a}={ADAPTERS_MOUNT}/{a}" for a in sorted(adapters))]
    return tuple(args)


def with_adapter(engine_args: tuple[str, ...], name: str) -> tuple[str, ...]:
    """``engine_args`` with adapter ``name`` listed in ``--lora-modules`` (once)."""
    args = list(engine_args)
    entry = f"{name}={ADAPTERS_MOUNT}/{name}"
    if entry in args:
        return engine_args
    if "--lora-modules" not in args:
        return (*args, "--lora-modules", entry)
    i = args.index("--lora-modules") + 1
    while i < len(args) and not args[i].startswith("-"):
        i += 1
    args.insert(i, entry)
    return tuple(args)


def adapters_in(engine_args: tuple[str, ...]) -> list[str]:
    """Adapter names a command line lists with ``--lora-modules``."""
    out: list[str] = []
    args = list(engine_args)
    if "--lora-modules" in args:
        for a in args[args.index("--lora-modules") + 1 :]:
            if a.startswith("-"):
                break
            out.append(a.split("=", 1)[0])
    return out


def runtime_updates(env: dict[str, str]) -> bool:
    return env.get(RUNTIME_ENV, "").strip().lower() in ("1", "true", "yes")
