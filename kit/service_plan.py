"""One service as planned: its GPUs, memory fraction, port and engine command line.

Plain data (no planning here), so every planner (:mod:`kit.single_host_plan`,
:mod:`kit.gateway_plan`, :mod:`kit.replicas`, :mod:`kit.hosts`, :mod:`kit.multinode`,
:mod:`kit.train.plan`) and every reader of a plan imports it without importing the planners;
the deployment record writes and reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass

from kit.model_info import FitEstimate

#: The port vLLM listens on inside every container; the host port is the stack's.
CONTAINER_PORT = 8000


@dataclass(frozen=True)
class ServicePlan:
    name: str
    kind: str
    served_name: str
    model: str
    #: what ``vllm serve`` gets as its first argument
    model_arg: str
    #: the host folder mounted read-only at ``model_arg`` (None for hub models)
    model_host_path: str | None
    gpus: tuple[int, ...]
    auto_placed: bool
    tp: int
    pp: int
    fraction: float
    fraction_source: str  # "stack" | "vllm default" | "filled"
    max_model_len: int | None
    port: int
    engine_args: tuple[str, ...]
    depends_on: tuple[str, ...]
    env: dict[str, str]
    startup_timeout: int
    reasoning_field: str | None
    fit: FitEstimate | None
    weights_gib: float | None
    #: with ``hosts:`` (kit.hosts): the host it runs on (a multi-node service: its head's)
    host: str | None = None
    #: where the kit reaches its published port (None: the bind address, on this machine)
    api_address: str | None = None
    #: a service spanning hosts (kit.multinode): vLLM's recipe (ray | native), every part
    recipe: str | None = None
    nodes: tuple[NodePart, ...] = ()
    #: one of ``replicas: N`` (kit.replicas): the stack's service it is a replica of
    replica_of: str | None = None
    #: False: no host port (reached through the gateway on the stack's network); port is 0
    published: bool = True
    #: vLLM's own data parallelism in this container (--data-parallel-size)
    dp: int = 1
    #: serving the jobs' LoRA adapters (kit.train): adapters_root, mounted read-only
    adapters_host_path: str | None = None


@dataclass(frozen=True)
class NodePart:
    """One host's container of a service that spans hosts (built by :mod:`kit.multinode`)."""

    host: str
    rank: int
    #: its compose service name on that host (rank 0: the service's own name)
    name: str
    gpus: tuple[int, ...]
    entrypoint: tuple[str, ...]
    command: tuple[str, ...]
    env: dict[str, str]


def gpu_ids(gpus: tuple[int, ...]) -> str:
    """``0-3`` for a contiguous group, ``2,5`` otherwise."""
    if len(gpus) > 2 and list(gpus) == list(range(gpus[0], gpus[-1] + 1)):
        return f"{gpus[0]}-{gpus[-1]}"
    return ",".join(map(str, gpus))
