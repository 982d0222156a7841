"""The double's environment: its knobs (KIT_DOUBLE_*), the vLLM version it imitates and the GPUs
the container sees."""

from __future__ import annotations

import os
import re

#: what KIT_DOUBLE_FAIL may name: the causes :mod:`.failures` has vLLM's text for
FAIL_CAUSES = (
    "oom",
    "free_memory",
    "world_size",
    "heads",
    "model_missing",
    "gated_401",
    "trust_remote_code",
    "unrecognized_args",
)

ENV_KNOBS = {
    "KIT_DOUBLE_VLLM_VERSION": "vLLM version to imitate (default 0.11.0)",
    "KIT_DOUBLE_LOAD_SECONDS": "seconds the port stays closed while 'loading' (float, default 2)",
    "KIT_DOUBLE_GPUS": "GPUs in the node when NVIDIA_VISIBLE_DEVICES is unset or 'all' (default 8)",
    "KIT_DOUBLE_FAIL": "force a startup failure: " + ", ".join(FAIL_CAUSES),
    "KIT_DOUBLE_EXIT_CODE": "exit code for forced failures (default 1; 2 for unrecognized_args) and crashes (default 0)",
    "KIT_DOUBLE_CRASH_AFTER": "seconds after process start at which the engine dies of CUDA OOM",
    "KIT_DOUBLE_NEVER_READY": "1: never open the port, keep logging",
    "KIT_DOUBLE_HTTP_503": "1: port opens but /health and every API route answer 503",
    "KIT_DOUBLE_TOKEN_DELAY_MS": "delay per generated token (default 0)",
    "KIT_DOUBLE_EMBED_DIM": "embedding dimension (default: config.json hidden_size, else 384)",
    "KIT_DOUBLE_LOG_INTERVAL": "seconds between 'still loading' lines in never-ready mode (default 5)",
    "KIT_DOUBLE_GPU_MEMORY_GIB": "total memory per simulated GPU in GiB (default 79.19, an H100 80GB)",
    "KIT_DOUBLE_JOIN_DELAY": "seconds a headless node waits before joining its head (default 0)",
    "KIT_DOUBLE_CONNECT_TIMEOUT": "seconds a headless node keeps trying to reach its head (default 600)",
    "KIT_DOUBLE_ERROR_SHAPE": "'nested' or 'flat' error JSON (default by version: nested from 0.10.1)",
}


def env_number(name: str, default, kind: type):
    """The variable `name` read as `kind` (int or float); `default` when unset or malformed."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        return default


def env_float(name: str, default: float) -> float:
    return env_number(name, default, float)


def env_int(name: str, default: int) -> int:
    return env_number(name, default, int)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def imitated_version() -> str:
    return os.environ.get("KIT_DOUBLE_VLLM_VERSION", "0.11.0").strip() or "0.11.0"


def version_tuple(v: str) -> tuple[int, ...]:
    nums = []
    for part in v.split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        nums.append(int(m.group()))
    return tuple(nums) or (0,)


def visible_gpu_count() -> int:
    """GPUs the container sees: NVIDIA_VISIBLE_DEVICES (set by the engine for device_ids
    reservations), narrowed by CUDA_VISIBLE_DEVICES when that is set."""
    default = env_int("KIT_DOUBLE_GPUS", 8)
    nv = os.environ.get("NVIDIA_VISIBLE_DEVICES")
    if nv is None or nv.strip().lower() in ("", "all"):
        count = default
    elif nv.strip().lower() in ("none", "void"):
        count = 0
    else:
        count = len([d for d in nv.split(",") if d.strip()])
    cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cuda is not None:
        count = min(count, len([d for d in cuda.split(",") if d.strip()]))
    return count
