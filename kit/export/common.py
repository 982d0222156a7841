"""What a stack becomes on Kubernetes: the pieces both export formats share
(:mod:`kit.export.manifests`, :mod:`kit.export.values`).

Mapping (the README's "Export to Kubernetes" table says it field by field):

- GPUs: a count (``nvidia.com/gpu``); host GPU ids and memory fractions shared between services
  do not exist on a cluster, where the scheduler gives each pod whole GPUs of its own.
- ports: the container listens on 8000 as under compose; a ClusterIP Service (manifests) or the
  chart's router (production-stack) takes the stack's port; no host port, no bind address.
- the model: a hub id (``model_source: hub``, or the service's ``pull:`` source) is downloaded
  into the pod's volume (HF_HOME); a host folder without a hub id is served from a
  PersistentVolumeClaim mounted where the compose file mounts the folder, to be filled first.
- start-up: the startup probe allows the plan's start-up budget; readiness and liveness probe
  ``/health``.
- secrets: the stack's env file becomes a Secret the pods read (``envFrom``), created by the
  user from that file; the export never reads it.
- a model over several hosts: a LeaderWorkerSet (one group of ``hosts`` pods) with vLLM's
  recipe of the plan, addresses from LWS (manifests); the chart's Ray path (production-stack).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any

from kit import __version__
from kit.plan import CONTAINER_PORT, Plan, ServicePlan
from kit.render import HF_HOME, environment

PROBE_PERIOD_S = 10
#: /dev/shm of a pod (compose: ipc host); the stack's shm_size when it sets one
DEFAULT_SHM = "16Gi"
#: volume sizes when the weights are unknown here
UNKNOWN_STORAGE_GIB = {"chat": 200, "embed": 20, "rerank": 20}


def group(plan: Plan) -> list[ServicePlan]:
    """One entry per stack service: replicas (kit.replicas) collapse into their first."""
    seen: set[str] = set()
    out = []
    for s in plan.services:
        key = getattr(s, "replica_of", None) or s.name
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def replicas(plan: Plan, s: ServicePlan) -> int:
    key = getattr(s, "replica_of", None) or s.name
    return sum(1 for x in plan.services if (getattr(x, "replica_of", None) or x.name) == key)


def service_name(s: ServicePlan) -> str:
    return getattr(s, "replica_of", None) or s.name


def dns_name(*parts: str) -> str:
    """A DNS-1123 label (<= 63 characters) from ``parts``."""
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-") or "kit"
    if len(name) > 63:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:54].rstrip('-')}-{digest}"
    return name


def image_parts(image: str) -> tuple[str, str]:
    """``repo:tag`` -> (repo, tag); a digest keeps ``@sha256:...`` in the tag's place."""
    if "@" in image:
        repo, digest = image.split("@", 1)
        return repo, f"@{digest}"
    repo, _, tag = image.rpartition(":")
    return repo, tag


@dataclass(frozen=True)
class ModelSource:
    """Where a pod finds its model: what vllm serve gets, and its volume's mount."""

    arg: str
    mount: str
    read_only: bool
    note: str | None = None


def model_source(plan: Plan, s: ServicePlan) -> ModelSource:
    svc = plan.stack.services[service_name(s)]
    pull = getattr(svc, "pull", None)
    if s.model_host_path is None:  # a hub model: the volume caches the download
        return ModelSource(s.model_arg, HF_HOME, False)
    if pull is not None:
        return ModelSource(pull.repo, HF_HOME, False, (
            f"{service_name(s)}: served from the hub id of its pull: source ({pull.repo}), "
            "downloaded into its volume; the host folder does not map"))  # fmt: skip
    return ModelSource(s.model_arg, s.model_arg, True, (
        f"{service_name(s)}: its host folder {s.model_host_path} does not map: copy the model "
        f"into its PersistentVolumeClaim (mounted at {s.model_arg}) before the pod starts"))  # fmt: skip


def serve_args(plan: Plan, s: ServicePlan, args: tuple[str, ...] | None = None) -> list[str]:
    """The service's vllm serve arguments for a pod: the model as the cluster sees it, the API
    on 0.0.0.0:8000 (compose's container side), and a pull: revision pinned."""
    out = list(args if args is not None else s.engine_args)
    out[0] = model_source(plan, s).arg
    for flag, value in (("--host", "0.0.0.0"), ("--port", str(CONTAINER_PORT))):
        if flag in out:
            out[out.index(flag) + 1] = value
    pull = getattr(plan.stack.services[service_name(s)], "pull", None)
    if pull is not None and s.model_host_path is not None and pull.revision != "main":
        out += ["--revision", pull.revision]
    return out


def storage_gib(s: ServicePlan) -> int:
    if s.weights_gib:
        return math.ceil(s.weights_gib * 1.2 + 10)
    return UNKNOWN_STORAGE_GIB.get(s.kind, 100)


def shm_size(plan: Plan) -> str:
    raw = plan.stack.defaults.shm_size
    if not raw:
        return DEFAULT_SHM
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([bkmg]?)", raw.lower())
    if not m:  # pragma: no cover - the stack's validator allows only these
        return DEFAULT_SHM
    unit = {"": "", "b": "", "k": "Ki", "m": "Mi", "g": "Gi"}[m.group(2)]
    return f"{m.group(1)}{unit}"


def startup_failures(s: ServicePlan) -> int:
    return max(1, math.ceil(s.startup_timeout / PROBE_PERIOD_S))


def env_list(
    plan: Plan, s: ServicePlan, extra: dict[str, str] | None = None
) -> list[tuple[str, str]]:
    env = {"HF_HOME": HF_HOME}
    if plan.stack.defaults.hf_endpoint:
        env["HF_ENDPOINT"] = plan.stack.defaults.hf_endpoint
    pull = getattr(plan.stack.services[service_name(s)], "pull", None)
    if pull is not None and pull.hub == "modelscope" and s.model_host_path is not None:
        env["VLLM_USE_MODELSCOPE"] = "True"  # vLLM downloads pull.repo from ModelScope, not HF
        if plan.stack.defaults.modelscope_endpoint:
            env["MODELSCOPE_ENDPOINT"] = plan.stack.defaults.modelscope_endpoint
    env.update(s.env)
    env.update(extra or {})
    return sorted(env.items())


def secret(plan: Plan) -> dict[str, str] | None:
    f = plan.stack.api_key_file()
    if f is None:
        return None
    return {"name": dns_name(plan.stack.name, "env"), "file": str(f)}


def host_comment(s: ServicePlan) -> str:
    where = f" on host {s.host}" if s.host else ""
    return (
        f"{service_name(s)}: {s.kind}, {s.served_name}; compose pinned GPU "
        f"{','.join(map(str, s.gpus))}{where} at {s.fraction:.2f}: here {len(s.gpus)} whole "
        f"GPU{'s' if len(s.gpus) > 1 else ''} the scheduler picks"
    )


def weights_memory_gib(s: ServicePlan) -> int:
    """Host RAM a pod asks for: the kit's estimate (the stack has no RAM field)."""
    return math.ceil((s.weights_gib or 0) / max(1, len(s.nodes) or 1) * 1.2 + 16)


def render_template(name: str, plan: Plan, **ctx: Any) -> str:
    from pathlib import Path

    base = {
        "kit_version": __version__,
        "source": Path(plan.stack.source).name,
        "stack": plan.stack.name,
        "vllm_version": plan.stack.defaults.vllm_version,
        "secret": secret(plan),
    }
    return environment().get_template(name).render(**base, **ctx)
