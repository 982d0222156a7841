"""One model over several hosts: vLLM's multi-node recipes, chosen by the pinned version.

A service with ``hosts: [a, b, ...]`` runs ONE model on the GPUs of every host it names
(``gpus`` are per host; tensor x pipeline parallel = GPUs per host x hosts). It is planned as if
its GPUs were one host (so every check of :mod:`kit.single_host_plan` applies: heads divisible
by TP, flags, parsers, and the fit check dividing weights and KV cache by TP x PP over the
hosts), then split into one container per host (:class:`~kit.service_plan.NodePart`), each with
host networking, its GPUs pinned by ``device_ids`` and the host's cluster address:

- ``ray``: the head (first host) runs ``ray start --head`` and then ``vllm serve`` with the Ray
  executor; the other hosts run ``ray start --address=HEAD --block``. Every Ray port is fixed
  (:func:`ray_ports`), so two nodes never race for one and a firewall can be opened for them.
- ``native`` (vLLM >= 0.11.1, the default where the version has it): every host runs
  ``vllm serve ... --nnodes N --node-rank R --master-addr HEAD --master-port P`` with the mp
  executor, the hosts after the first ``--headless``.

``kit up`` starts the head, then the workers; the service counts as formed once the cluster
reports every expected node and GPU (:func:`ray_formed`: ``ray status`` in the head container;
:func:`native_formed`: every rank's "rank R in world size W is assigned" line in the hosts'
logs), then waits for vLLM as usual. Losing any part fails the whole service, on every host.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from kit import vllm_versions as vv
from kit.errors import StackError
from kit.host_addresses import api_address, bind_address
from kit.service_plan import NodePart, ServicePlan
from kit.single_host_plan import build_single_host_plan
from kit.spec import Host, Service, Stack
from kit.stack_plan import Plan

if TYPE_CHECKING:
    from kit.render import RenderOptions

RAY_GCS_PORT = 6379
#: vLLM's own default --master-port
NATIVE_MASTER_PORT = 29501
#: fixed Ray ports per node (node manager, object manager, agents, metrics, runtime env)
RAY_NODE_PORTS = 8
#: what the head runs: Ray's head node, then vllm serve with the arguments of the command
RAY_HEAD_SCRIPT = 'ray start $KIT_RAY_START && exec vllm serve "$@"'
#: environment variables that name the cluster interface for vLLM's collective libraries
SOCKET_IFNAME_ENV = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "TP_SOCKET_IFNAME")


def ray_ports(base: int, rank: int, worker_ports: int | None = None) -> dict[str, int]:
    """The fixed Ray ports of node ``rank`` for a cluster whose head listens on ``base``: the
    head's GCS and client ports, then a block per node (and its own worker port range when
    ``worker_ports`` is given)."""
    start = base + 2 + rank * (RAY_NODE_PORTS + (worker_ports or 0))
    ports = {
        "node-manager-port": start,
        "object-manager-port": start + 1,
        "dashboard-agent-listen-port": start + 2,
        "dashboard-agent-grpc-port": start + 3,
        "metrics-export-port": start + 4,
        "runtime-env-agent-port": start + 5,
    }
    if worker_ports:
        first = start + RAY_NODE_PORTS
        ports.update({"min-worker-port": first, "max-worker-port": first + worker_ports - 1})
    if rank == 0:
        ports = {"port": base, "ray-client-server-port": base + 1, **ports}
    return ports


def worker_ports(svc: Service) -> int | None:
    return svc.multinode.ray_worker_ports if svc.multinode else None


def backend_of(stack: Stack, svc: Service) -> str:
    chosen = svc.multinode.backend if svc.multinode else None
    return chosen or vv.default_multinode_backend(stack.defaults.version)


def cluster_port(stack: Stack, svc: Service) -> int:
    port = svc.multinode.port if svc.multinode else None
    if port is not None:
        return port
    return RAY_GCS_PORT if backend_of(stack, svc) == "ray" else NATIVE_MASTER_PORT


def used_ports(stack: Stack, svc: Service) -> list[int]:
    """Every host port the service's cluster itself listens on (besides the API port)."""
    base = cluster_port(stack, svc)
    if backend_of(stack, svc) == "native":
        return [base]
    assert svc.hosts is not None
    out: list[int] = []
    for rank in range(len(svc.hosts)):
        p = ray_ports(base, rank, worker_ports(svc))
        out += [v for k, v in p.items() if not k.endswith("worker-port")]
        if "min-worker-port" in p:
            out += list(range(p["min-worker-port"], p["max-worker-port"] + 1))
    return out


def plan_service(
    stack: Stack,
    name: str,
    svc: Service,
    gpus_on: dict[str, tuple[int, ...]],
    *,
    inspect_models: bool,
    problems: list[str],
    notes: list[str],
    warnings: list[str],
) -> ServicePlan | None:
    """Plan service ``name`` over ``svc.hosts`` with its GPU ids on each (``gpus_on``, chosen
    by :mod:`kit.hosts`). Problems, notes and warnings are appended; None when it has problems."""
    assert stack.hosts is not None and svc.hosts is not None
    where = f"service '{name}'"
    version = stack.defaults.version
    backend = backend_of(stack, svc)
    n_hosts = len(svc.hosts)
    per_host = len(gpus_on[svc.hosts[0]])
    world = per_host * n_hosts
    before = len(problems)
    if backend not in vv.multinode_backends(version):
        try:
            vv.multinode_flags(backend, version)
        except ValueError as exc:
            problems.append(f"{where}, field 'multinode.backend': {exc}")
    tp = svc.tensor_parallel_size or max(1, world // svc.pipeline_parallel_size)
    if tp * svc.pipeline_parallel_size != world:
        problems.append(
            f"{where}, field 'tensor_parallel_size': tensor_parallel_size {tp} x "
            f"pipeline_parallel_size {svc.pipeline_parallel_size} = "
            f"{tp * svc.pipeline_parallel_size}, but the service gets {per_host} GPUs on each of "
            f"{n_hosts} hosts = {world}; they must be equal (vLLM: TP = GPUs per host, PP = hosts)"
        )
    if svc.port is None:
        problems.append(f"{where}, field 'port': required (the head host's port for its API)")
    missing = [h for h in svc.hosts if not stack.hosts[h].address]
    if missing:
        problems.append(
            f"{where}, field 'hosts': host{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} need an address (hosts.NAME.address: the host's address on "
            "the cluster network, which the other hosts connect to)"
        )
    if any(a in ("--distributed-executor-backend",) or a.startswith("--distributed-executor")
           for a in svc.extra_args):  # fmt: skip
        problems.append(
            f"{where}, field 'extra_args': --distributed-executor-backend is set by the kit for a "
            "service over several hosts; choose the recipe with multinode.backend"
        )
    addresses = [stack.hosts[h].address for h in svc.hosts]
    if backend == "ray" and len(set(addresses)) < n_hosts and worker_ports(svc) is None:
        problems.append(
            f"{where}, field 'multinode.ray_worker_ports': hosts {', '.join(svc.hosts)} share an "
            "address, so their Ray nodes would race for Ray's worker ports: give each node its "
            "own range (e.g. ray_worker_ports: 100)"
        )
    if len(problems) > before:
        return None
    if tp > per_host:
        warnings.append(
            f"{name}: tensor parallel {tp} spans hosts ({per_host} GPUs per host): vLLM advises "
            f"tensor_parallel_size = GPUs per host ({per_host}) and pipeline_parallel_size = "
            f"hosts ({n_hosts})"
        )

    # plan it as one host holding all its GPUs: every single-host check applies
    memory = min(stack.hosts[h].memory_gib for h in svc.hosts)
    head = svc.hosts[0]
    virtual = Stack.model_construct(
        name=stack.name,
        description=stack.description,
        host=Host(gpus=world, gpu_memory_gib=memory),
        hosts=None,
        defaults=stack.defaults.model_copy(update={"bind_address": bind_address(stack, head)}),
        services={
            name: svc.model_copy(
                update={
                    "gpus": tuple(range(world)),
                    "hosts": None,
                    "host": None,
                    "multinode": None,
                    "tensor_parallel_size": tp,
                }
            )
        },
        source=stack.source,
        base_dir=stack.base_dir,
        name_from_file=None,
    )
    try:
        vplan = build_single_host_plan(virtual, inspect_models=inspect_models)
    except StackError as exc:
        problems += exc.problems
        return None
    sp = vplan.services[0]
    notes += [n for n in vplan.notes if n.startswith(f"{name}: ")]
    warnings += vplan.warnings
    notes.append(
        f"{name}: one model over hosts {', '.join(svc.hosts)} ({backend} recipe): TP {tp} x PP "
        f"{svc.pipeline_parallel_size} = {world} GPUs, {per_host} on each host; the fit check "
        f"divides weights and KV cache by {world}"
    )
    parts = _parts(stack, name, svc, sp, gpus_on, backend)
    return dataclasses.replace(
        sp,
        gpus=gpus_on[head],
        engine_args=parts[0].command if backend == "native" else _with_api(sp, stack, head, svc),
        host=head,
        api_address=api_address(stack, head),
        recipe=backend,
        nodes=tuple(parts),
    )


def _with_api(sp: ServicePlan, stack: Stack, head: str, svc: Service) -> tuple[str, ...]:
    """The service's vllm serve arguments with host networking: the API listens on the head
    host's bind address and the service's port (no container port mapping)."""
    args = list(sp.engine_args)
    for flag, value in (("--host", bind_address(stack, head)), ("--port", str(svc.port))):
        args[args.index(flag) + 1] = value
    return tuple(args)


def _parts(
    stack: Stack,
    name: str,
    svc: Service,
    sp: ServicePlan,
    gpus_on: dict[str, tuple[int, ...]],
    backend: str,
) -> list[NodePart]:
    assert stack.hosts is not None and svc.hosts is not None
    version = stack.defaults.version
    head = svc.hosts[0]
    head_addr = stack.hosts[head].address
    base = cluster_port(stack, svc)
    serve = _with_api(sp, stack, head, svc)
    parts = []
    for rank, host in enumerate(svc.hosts):
        entry = stack.hosts[host]
        env = {**sp.env, "VLLM_HOST_IP": str(entry.address)}
        if entry.interface:
            env.update(dict.fromkeys(SOCKET_IFNAME_ENV, entry.interface))
        n_gpus = len(gpus_on[host])
        if backend == "native":
            flags = vv.multinode_flags(
                "native", version, nnodes=len(svc.hosts), rank=rank, master_addr=head_addr,
                master_port=base,
            )  # fmt: skip
            command = (*serve, *flags, *(vv.NATIVE_HEADLESS if rank else ()))
            entrypoint: tuple[str, ...] = ("vllm", "serve")
        else:
            ray = [f"--node-ip-address={entry.address}", f"--num-gpus={n_gpus}",
                   "--disable-usage-stats"]  # fmt: skip
            ray += [f"--{k}={v}" for k, v in ray_ports(base, rank, worker_ports(svc)).items()]
            if rank == 0:
                env["KIT_RAY_START"] = " ".join(["--head", "--include-dashboard=false", *ray])
                entrypoint = ("/bin/sh", "-c", RAY_HEAD_SCRIPT, "vllm")
                command = (*serve, *vv.multinode_flags("ray", version))
            else:
                entrypoint = ("ray", "start")
                command = ("--block", f"--address={head_addr}:{base}", *ray)
        parts.append(
            NodePart(
                host=host,
                rank=rank,
                name=name if rank == 0 else f"{name}-node{rank}",
                gpus=gpus_on[host],
                entrypoint=entrypoint,
                command=command,
                env=env,
            )
        )
    return parts


# --- rendering ---------------------------------------------------------------------------------


def compose_service(
    view: Plan, s: ServicePlan, part: NodePart, options: RenderOptions
) -> dict[str, Any]:
    """The compose service (template context) of one host's part of ``s``."""
    from kit.render import service_context

    as_service = dataclasses.replace(
        s, name=part.name, gpus=part.gpus, engine_args=part.command, env=part.env, depends_on=()
    )
    ctx = service_context(view, as_service, options)
    bind = view.stack.defaults.bind_address
    probe_host = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind
    health = None
    if part.rank == 0:
        health = dict(ctx["health"])
        health["test"] = [
            "CMD", "python3", "-c",
            "import urllib.request; "
            f"urllib.request.urlopen('http://{probe_host}:{s.port}/health', timeout=4)",
        ]  # fmt: skip
    role = "head" if part.rank == 0 else "worker"
    labels = dict(ctx["labels"])
    labels.update({"kit.recipe": str(s.recipe), "kit.node-rank": str(part.rank),
                   "kit.multinode-service": s.name})  # fmt: skip
    ctx.update(
        # compose interpolates $NAME in the file itself: the script's own variables are $$NAME
        entrypoint=[a.replace("$", "$$") for a in part.entrypoint],
        network_mode="host",
        published=False,
        health=health,
        # a part alone cannot rejoin its cluster: the kit starts the whole service again
        restart="no",
        labels=sorted(labels.items()),
        gpus_comment=(
            f"{s.recipe} {role} (rank {part.rank} of {len(s.nodes)}) of '{s.name}': GPU "
            f"{','.join(map(str, part.gpus))} at {s.fraction:.2f}; host networking"
        ),
    )
    return ctx


# --- is the cluster formed? --------------------------------------------------------------------

_RAY_NODE = re.compile(r"^\s*\d+\s+node_[0-9a-f]+", re.MULTILINE)
_RAY_GPU = re.compile(r"^\s*[\d.]+/([\d.]+)\s+GPU\b", re.MULTILINE)
_RANK_LINE = re.compile(r"rank (\d+) in world size (\d+) is assigned as")


def expected_world(s: ServicePlan) -> int:
    return sum(len(p.gpus) for p in s.nodes)


def ray_formed(s: ServicePlan, status_text: str) -> str | None:
    """None when ``ray status`` shows every node and GPU of ``s``, else what it lacks."""
    active = status_text.split("Pending:", 1)[0]
    nodes = len(_RAY_NODE.findall(active))
    m = _RAY_GPU.search(status_text)
    gpus = float(m.group(1)) if m else 0.0
    want = expected_world(s)
    if nodes >= len(s.nodes) and gpus >= want:
        return None
    return f"Ray cluster: {nodes}/{len(s.nodes)} nodes, {gpus:g}/{want} GPUs"


def native_formed(s: ServicePlan, logs: Iterable[str]) -> str | None:
    """None when the hosts' logs show every rank of ``s`` joined, else how many did."""
    seen: set[int] = set()
    for text in logs:
        seen |= {int(m.group(1)) for m in _RANK_LINE.finditer(text)}
    want = expected_world(s)
    if len(seen) >= want:
        return None
    return f"{len(seen)}/{want} ranks joined"


def describe_part(s: ServicePlan, part: NodePart) -> str:
    role = "head" if part.rank == 0 else "worker"
    return f"{s.recipe} {role} {part.name} on host '{part.host}'"
