"""Replicas: ``replicas: N`` on a service becomes N containers on disjoint GPU sets, one model
name behind the gateway.

The plan expands a replicated service here, before anything else is planned, into one
single-container service per replica: ``chat`` with ``replicas: 2`` becomes ``chat-1`` and
``chat-2`` (compose service names), each planned like any service (placement, fractions, fit,
command line) and marked with ``replica_of``. GPU ids given as a list are split in order into
N equal groups; a count is per replica and placed automatically. A published ``port`` gives
the replicas consecutive ports from it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from kit import vllm_versions as vv
from kit.spec import Service

if TYPE_CHECKING:
    from kit.service_plan import ServicePlan


def replica_name(service: str, index: int) -> str:
    return f"{service}-{index}"


def expand(name: str, svc: Service, problems: list[str]) -> list[tuple[str, Service, int]]:
    """``(compose name, single-container service, replica index)`` for each replica; index 0
    for a service without replicas (kept under its own name)."""
    n = svc.replicas
    if n == 1:
        return [(name, svc, 0)]
    where = f"service '{name}'"
    if isinstance(svc.gpus, int):
        groups: list[int | tuple[int, ...]] = [svc.gpus] * n
    else:
        ids = list(svc.gpus)
        if len(ids) % n:
            problems.append(
                f"{where}, field 'gpus': {len(ids)} GPU ids do not split into {n} replicas; give "
                f"a multiple of {n} (split in order), or a count per replica (e.g. gpus: 1)"
            )
            return [(name, svc.model_copy(update={"replicas": 1}), 0)]
        size = len(ids) // n
        groups = [tuple(ids[i * size : (i + 1) * size]) for i in range(n)]
    out = []
    for i, gpus in enumerate(groups, 1):
        update = {
            "gpus": gpus,
            "served_name": svc.served_name or name,
            "port": None if svc.port is None else svc.port + i - 1,
        }
        if update["port"] is not None and update["port"] > 65535:
            problems.append(f"{where}, field 'port': replica {i} would get port {update['port']}")
            update["port"] = None
        out.append((replica_name(name, i), svc.model_copy(update=update), i))
    return out


def overlap_problems(placed: list[tuple[str, str, tuple[int, ...]]]) -> list[str]:
    """Replicas of one service must not share a GPU. ``placed``: (stack service, compose name,
    GPUs) of every replica."""
    by_service: dict[str, list[tuple[str, tuple[int, ...]]]] = defaultdict(list)
    for service, name, gpus in placed:
        by_service[service].append((name, gpus))
    out = []
    for service, members in by_service.items():
        seen: dict[int, str] = {}
        for name, gpus in members:
            for g in gpus:
                if g in seen:
                    out.append(
                        f"service '{service}', field 'gpus': replicas {seen[g]} and {name} both "
                        f"use GPU {g}; replicas need disjoint GPUs (give more GPUs to the host, "
                        "fewer replicas, or explicit ids)"
                    )
                    break
                seen[g] = name
    return out


def groups(services: tuple[ServicePlan, ...]) -> dict[str, list[ServicePlan]]:
    """The planned containers by the stack's service they belong to, in plan order."""
    out: dict[str, list[ServicePlan]] = {}
    for s in services:
        out.setdefault(s.replica_of or s.name, []).append(s)
    return out


def per_data_parallel_rank(n: int, dp: int, where: str, problems: list[str]) -> int:
    """GPUs of each data-parallel rank of a service with ``data_parallel_size: dp``."""
    if n % dp:
        problems.append(
            f"{where}, field 'data_parallel_size': {n} GPUs do not split into {dp} data-parallel "
            f"ranks; give a multiple of {dp} GPUs (DP x TP x PP)"
        )
        return max(1, n // dp)
    return n // dp


def parallelism_notes(
    svc: Service, replica: int, version: vv.Version, problems: list[str], name: str
) -> list[str]:
    """What the plan says about a service's copies: replicas (containers, balanced by the
    gateway) or vLLM's data parallelism (one container, balanced by vLLM)."""
    from kit.vllm_flags import lookup

    out = []
    if svc.data_parallel_size > 1:
        if lookup("--data-parallel-size", version) is None:
            problems.append(
                f"service '{name}', field 'data_parallel_size': vLLM {version} has no "
                "--data-parallel-size; use replicas: instead"
            )
        out.append(
            f"data parallel: {svc.data_parallel_size} engines in ONE container "
            "(--data-parallel-size; vLLM balances them behind one address)"
        )
    if replica == 1:
        out.append(
            f"replicas: {svc.replicas} containers on disjoint GPUs behind one model name "
            "(the gateway balances them)"
        )
    return out
