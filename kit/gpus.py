"""GPU models the kit knows, with the memory vLLM really sees on them.

Marketing sizes are not what the engine gets: an "80 GB" H100 reports 81,559 MiB in
``nvidia-smi`` (79.6 GiB), and CUDA's context and the driver take a little more before vLLM
measures. The figures here are each card's ``nvidia-smi`` total less 0.4 GiB for that, in GiB
(1024^3 bytes), the unit of ``host.gpu_memory_gib`` and of the fit check.
"""

from __future__ import annotations

import re
from typing import Any

#: usable GiB per GPU, by the names people write (matched case- and punctuation-insensitively)
USABLE_GIB: dict[str, float] = {
    "H100": 79.2,  # 80 GB SXM/PCIe: 81,559 MiB
    "H100-NVL": 93.1,  # 94 GB: 95,830 MiB
    "H800": 79.2,
    "H200": 139.9,  # 141 GB: 143,771 MiB
    "H20": 95.2,  # 96 GB: 97,871 MiB
    "B200": 178.7,  # 180 GB: 183,359 MiB
    "A100-40": 39.2,  # 40 GB: 40,536 MiB
    "A100-80": 78.9,  # 80 GB: 81,251 MiB
    "A800": 78.9,
    "L40S": 44.6,  # 48 GB: 46,068 MiB
    "L40": 44.6,
    "L20": 44.6,
    "A10": 22.1,  # 24 GB: 23,028 MiB
    "L4": 22.1,  # 24 GB: 23,034 MiB
    "4090": 23.6,  # 24 GB: 24,564 MiB
    "3090": 23.6,
    "5090": 31.4,  # 32 GB: 32,607 MiB
    "A6000": 47.1,  # 48 GB: 49,140 MiB
}

#: other spellings of the same cards
_ALIASES: dict[str, str] = {
    "H10080GB": "H100",
    "H100SXM": "H100",
    "H100PCIE": "H100",
    "H100NVL": "H100-NVL",
    "H200141GB": "H200",
    "A10040GB": "A100-40",
    "A10080GB": "A100-80",
    "A100": "A100-80",
    "RTX4090": "4090",
    "RTX3090": "3090",
    "RTX5090": "5090",
    "RTXA6000": "A6000",
}


def _key(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", name.upper().removeprefix("NVIDIA").strip())


_BY_KEY: dict[str, str] = {_key(n): n for n in USABLE_GIB} | {
    _key(a): n for a, n in _ALIASES.items()
}


def canonical(name: str) -> str | None:
    """The table's name for ``name`` (``"nvidia h100 80gb"`` -> ``"H100"``), or None."""
    return _BY_KEY.get(_key(name))


def usable_gib(name: str) -> float | None:
    model = canonical(name)
    return USABLE_GIB[model] if model else None


def known() -> str:
    return ", ".join(USABLE_GIB)


def parse_gpus(v: Any) -> int | tuple[int, ...]:
    """A ``gpus`` field (a service's or a job's): a count, or a list of distinct GPU ids.
    Raises ``ValueError`` with what to write instead."""
    if isinstance(v, bool):
        raise ValueError("must be a count (e.g. 2) or a list of GPU ids (e.g. [0, 1])")
    if isinstance(v, int):
        if v < 1:
            raise ValueError(f"a GPU count must be at least 1, got {v}")
        return v
    if isinstance(v, list | tuple):
        if not v:
            raise ValueError("the list of GPU ids is empty")
        if any(isinstance(i, bool) or not isinstance(i, int) for i in v):
            raise ValueError(f"GPU ids must be whole numbers, got {list(v)!r}")
        if len(set(v)) != len(v):
            raise ValueError(f"GPU ids repeat in {list(v)!r}")
        return tuple(v)
    raise ValueError("must be a count (e.g. 2) or a list of GPU ids (e.g. [0, 1])")


def gpus_request_problem(gpus: int | tuple[int, ...] | list[int], host_gpus: int) -> str | None:
    """What is wrong with a (parsed) ``gpus`` request on a host of ``host_gpus`` GPUs: a count
    larger than the host, or ids outside it (None: nothing). Services and jobs share it."""
    if isinstance(gpus, int):
        return f"asks for {gpus} GPUs but the host has {host_gpus}" if gpus > host_gpus else None
    bad = [g for g in gpus if not 0 <= g < host_gpus]
    if not bad:
        return None
    return (
        f"GPU id{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))} outside the host's "
        f"{host_gpus} GPUs (valid ids 0-{host_gpus - 1})"
    )
