"""Stacks over several hosts (``hosts:``): placement and checks per host, one compose file
per host, and one engine view over every host's Docker engine.

A stack with ``hosts:`` names each host's Docker engine (``docker: unix://|ssh://|tcp://...`` or
``context:``), GPUs and addresses. Each service runs on one host (``host: NAME``, or placed
automatically on the first host with enough free GPUs); a service with ``hosts: [a, b]`` runs
one model over several hosts (:mod:`kit.multinode`).

Planning splits the stack into one single-host stack per host and plans each with
:func:`kit.single_host_plan.build_single_host_plan`, so every check of a single host applies
per host (GPU ids, sharing and headroom, placement, fit, flags); then it checks what spans hosts (served names, ports on a
shared address, GPUs of multi-node parts) and merges the per-host plans into one
:class:`~kit.plan.Plan` whose services carry their ``host``. That plan is what the deployment
record holds; :func:`host_view` gives any host's single-host plan back (for rendering, the plan
table, doctor).

:class:`HostsEngine` is the :class:`~kit.engine.Engine` of such a stack: a
:class:`HostProject` (python-on-whales with that host's Docker endpoint) per host, each with its
compose file under ``$KIT_STATE_DIR/projects/STACK/hosts/HOST/``; it starts, watches, reads logs
and takes down on every host, and tells the readiness loop when a multi-node service's cluster
has formed.
"""

from __future__ import annotations

import dataclasses
import queue
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from kit import gateway_hosts, host_endpoints, multinode
from kit.engine import ContainerState, Project, project_folder
from kit.errors import EngineError, StackError
from kit.host_addresses import api_address, bind_address, is_local
from kit.jinja_env import environment
from kit.render import RenderOptions, compose_context
from kit.service_plan import NodePart, ServicePlan
from kit.single_host_plan import build_single_host_plan
from kit.spec import Host, HostEntry, Service, Stack
from kit.stack_plan import Plan

#: seconds between two looks at a forming cluster (``ray status`` takes about a second)
CLUSTER_POLL_S = 2.0
#: log lines of a multi-node part read for a diagnosis (the root cause comes early)
PART_LOG_TAIL = 400
#: log lines read per part when looking for ranks (native recipe)
RANK_LOG_TAIL = 5000


# --- a host's engine and addresses ------------------------------------------------------------


def engine_kwargs(entry: HostEntry) -> dict[str, Any]:
    """python-on-whales DockerClient settings that reach ``entry``'s engine."""
    kw: dict[str, Any] = {}
    if entry.docker:
        kw["host"] = entry.docker
    if entry.context:
        kw["context"] = entry.context
    if entry.tls:
        kw.update(tlsverify=True, tlscacert=entry.tls.ca, tlscert=entry.tls.cert,
                  tlskey=entry.tls.key)  # fmt: skip
    return kw


def describe_engine(entry: HostEntry) -> str:
    if entry.context:
        return f"context {entry.context}"
    return entry.docker or "the default engine"


# --- planning --------------------------------------------------------------------------------


def _demand(svc: Service) -> int:
    n = svc.gpus if isinstance(svc.gpus, int) else len(svc.gpus)
    return n * max(1, getattr(svc, "replicas", 1))


def host_stack(stack: Stack, host: str, services: Mapping[str, Service]) -> Stack:
    """The single-host stack of ``host``: its GPUs as ``host:``, its bind address, ``services``.
    Built from validated parts, so not validated again."""
    assert stack.hosts is not None
    e = stack.hosts[host]
    fields = {name: getattr(stack, name) for name in type(stack).model_fields}
    fields.update(
        host=Host(gpus=e.gpus, gpu_memory_gib=e.gpu_memory_gib, gpu_model=e.gpu_model),
        hosts=None,
        # the gateway is planned on its host only (its routes: kit.gateway_hosts)
        gateway=gateway_hosts.on_host(stack, host),
        defaults=stack.defaults.model_copy(update={"bind_address": bind_address(stack, host)}),
        services=dict(services),
    )
    return Stack.model_construct(**fields)


def build_hosts_plan(stack: Stack, *, inspect_models: bool = True) -> Plan:
    """Plan a stack with ``hosts:`` (see the module doc). Raises :class:`StackError` with every
    problem, each naming its host where it has one."""
    label = f"'{stack.name}' ({stack.source})"
    problems: list[str] = []
    notes: list[str] = []
    warnings: list[str] = []
    if stack.hosts is None:
        for name, svc in stack.services.items():
            if svc.host or svc.hosts:
                problems.append(
                    f"service '{name}', field '{'host' if svc.host else 'hosts'}': the stack has "
                    "one host (host:); list the hosts under hosts: (each with its Docker engine) "
                    "to place services on them"
                )
        if stack.gateway is not None and stack.gateway.host is not None:
            problems.append(
                "field 'gateway.host': the stack has one host (host:); the gateway runs there"
            )
        raise StackError(label, problems)
    hosts = stack.hosts
    for section in ("observability", "jobs"):
        if getattr(stack, section, None):
            problems.append(
                f"field '{section}': not supported in a stack with hosts: yet (the gateway is); "
                "keep it in a stack of one host"
            )
    for h, e in hosts.items():
        if not is_local(e) and not (e.api_address or e.address):
            problems.append(
                f"host '{h}': give address (or api_address): the kit reaches what runs on this "
                f"remote host ({describe_engine(e)}) through it"
            )
        bind = bind_address(stack, h)
        # (an engine reached at a loopback address, tcp:// or a context, runs on this machine)
        loopback = ("127.0.0.1", "::1", "localhost")
        reached = e.api_address or e.address
        if not is_local(e) and bind in loopback[:2] and reached not in loopback:
            problems.append(
                f"host '{h}', field 'bind_address': its services would listen on {bind}, which "
                f"nobody reaches from another machine; set hosts.{h}.bind_address to its address "
                f"({e.address or 'on the network the kit uses'}), or 0.0.0.0 with an API key"
            )

    single: dict[str, dict[str, Service]] = {h: {} for h in hosts}
    multi: dict[str, Service] = {}
    #: replicas of one service over several hosts (kit.gateway_hosts): service -> host -> share
    shares: dict[str, dict[str, gateway_hosts.HostShare]] = {}
    auto: list[str] = []
    claimed: dict[str, set[int]] = {h: set() for h in hosts}
    counted: dict[str, int] = dict.fromkeys(hosts, 0)
    known = ", ".join(hosts)
    for name, svc in stack.services.items():
        where = f"service '{name}'"
        if gateway_hosts.is_replicated_over_hosts(svc):
            shares[name] = gateway_hosts.split_over_hosts(name, svc, hosts, problems)
            for h, share in shares[name].items():
                single[h][name] = share.service
                if isinstance(share.service.gpus, tuple):
                    claimed[h] |= set(share.service.gpus)
                else:
                    counted[h] += _demand(share.service)
        elif svc.host and svc.hosts:
            problems.append(f"{where}: give host (one) or hosts (one model over several), not both")
        elif svc.hosts is not None:
            bad = [h for h in svc.hosts if h not in hosts]
            if bad:
                problems.append(
                    f"{where}, field 'hosts': unknown host {', '.join(bad)} (hosts: {known})"
                )
            elif len(set(svc.hosts)) != len(svc.hosts) or len(svc.hosts) < 2:
                problems.append(
                    f"{where}, field 'hosts': name at least two different hosts (one host: use "
                    "host:)"
                )
            else:
                multi[name] = svc
        else:
            if svc.multinode is not None:
                problems.append(
                    f"{where}, field 'multinode': goes with hosts: [...] (a model over several hosts)"
                )
            if svc.host is not None and svc.host not in hosts:
                problems.append(
                    f"{where}, field 'host': unknown host {svc.host!r} (hosts: {known})"
                )
            elif svc.host is not None:
                single[svc.host][name] = svc
                if isinstance(svc.gpus, tuple):
                    claimed[svc.host] |= set(svc.gpus)
                else:
                    counted[svc.host] += _demand(svc)
            elif isinstance(svc.gpus, tuple) and len(hosts) > 1:
                problems.append(
                    f"{where}, field 'host': GPU ids mean nothing without a host; name one ({known}), "
                    "or give a GPU count for automatic placement"
                )
            else:
                auto.append(name)

    # multi-node services: the same GPU ids (or the first free ones) on each of their hosts
    gpus_on: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, svc in multi.items():
        gpus_on[name] = {}
        for h in svc.hosts or ():
            if isinstance(svc.gpus, tuple):
                ids = svc.gpus
                bad = [g for g in ids if not 0 <= g < hosts[h].gpus]
                if bad:
                    problems.append(
                        f"service '{name}', field 'gpus': GPU id {', '.join(map(str, bad))} "
                        f"outside host '{h}' ({hosts[h].gpus} GPUs)"
                    )
            else:
                free = [g for g in range(hosts[h].gpus) if g not in claimed[h]]
                ids = tuple(free[: svc.gpus])
                if len(ids) < svc.gpus:
                    problems.append(
                        f"service '{name}', field 'gpus': {svc.gpus} GPUs asked on each host, "
                        f"host '{h}' has {len(free)} free"
                    )
            taken = sorted(set(ids) & claimed[h])
            if taken:
                problems.append(
                    f"service '{name}', field 'gpus': GPU {', '.join(map(str, taken))} of host "
                    f"'{h}' already belongs to another service; a model over several hosts needs "
                    "its GPUs alone"
                )
            claimed[h] |= set(ids)
            gpus_on[name][h] = tuple(ids)

    # automatic host placement: largest first, the first host with room, else the roomiest
    for name in sorted(auto, key=lambda n: (-_demand(stack.services[n]), n)):
        svc = stack.services[name]
        free = {h: hosts[h].gpus - len(claimed[h]) - counted[h] for h in hosts}
        need = _demand(svc)
        fits = [h for h in hosts if free[h] >= need]
        h = fits[0] if fits else max(hosts, key=lambda k: free[k])
        single[h][name] = svc
        counted[h] += need
        if len(hosts) > 1:
            notes.append(
                f"{name}: placed on host '{h}' ({free[h]} of {hosts[h].gpus} GPUs free there)"
            )
    if stack.gateway is not None:
        problems += gateway_hosts.placement_problems(stack, single, multi)
    if problems:
        raise StackError(label, problems)
    _around_multinode(hosts, single, gpus_on, claimed, notes)

    per_host: dict[str, Plan] = {}
    for h in hosts:
        if not single[h]:
            continue
        services = {n: s.model_copy(update={"host": None}) for n, s in single[h].items()}
        try:
            per_host[h] = build_single_host_plan(
                host_stack(stack, h, services), inspect_models=inspect_models
            )
        except StackError as exc:
            problems += [f"host '{h}': {p}" for p in exc.problems]
    multi_plans: list[ServicePlan] = []
    for name, svc in multi.items():
        sp = multinode.plan_service(
            stack, name, svc, gpus_on[name], inspect_models=inspect_models,
            problems=problems, notes=notes, warnings=warnings,
        )  # fmt: skip
        if sp is not None:
            multi_plans.append(sp)
    if problems:
        raise StackError(label, problems)

    services: list[ServicePlan] = list(multi_plans)
    seen_notes: set[str] = set()
    for h, p in per_host.items():
        address = api_address(stack, h)
        mine = gateway_hosts.rename_replicas(
            list(p.services), {n: on[h] for n, on in shares.items() if h in on}, h
        )
        services += [dataclasses.replace(s, host=h, api_address=address) for s in mine]
        for n in p.notes:
            if n not in seen_notes:
                notes.append(n if _stack_wide(n) else f"host '{h}': {n}")
                seen_notes.add(n)
        for w in p.warnings:
            if w not in seen_notes:
                warnings.append(w if _stack_wide(w) else f"host '{h}': {w}")
                seen_notes.add(w)
    _cross_host(stack, services, multi, problems)
    if problems:
        raise StackError(label, problems)
    idle = [
        h for h in hosts if not single[h] and not any(h in (s.hosts or ()) for s in multi.values())
    ]
    gateway = None
    if stack.gateway is not None:
        gateway = gateway_hosts.build_hosts_gateway(stack, tuple(services))
        idle = [h for h in idle if h != gateway.host]
        warnings += gateway_hosts.exposure_warnings(stack, tuple(services))
    if idle:
        notes.append(f"host{'s' if len(idle) > 1 else ''} {', '.join(idle)} run nothing")
    return Plan(stack=stack, services=tuple(services), notes=tuple(notes),
                warnings=tuple(warnings), gateway=gateway)  # fmt: skip


def _around_multinode(
    hosts: Mapping[str, HostEntry],
    single: dict[str, dict[str, Service]],
    gpus_on: Mapping[str, Mapping[str, tuple[int, ...]]],
    claimed: dict[str, set[int]],
    notes: list[str],
) -> None:
    """On a host that holds part of a multi-node service, services given a GPU count get
    explicit ids among the GPUs left (the host's own placement does not know those parts)."""
    multi_held: dict[str, set[int]] = defaultdict(set)
    for on in gpus_on.values():
        for h, ids in on.items():
            multi_held[h] |= set(ids)
    for h, held in multi_held.items():
        counted = [
            (n, s) for n, s in single[h].items()
            if isinstance(s.gpus, int) and getattr(s, "replicas", 1) == 1
        ]  # fmt: skip
        for name, svc in sorted(counted, key=lambda x: (-_demand(x[1]), x[0])):
            assert isinstance(svc.gpus, int)
            n = svc.gpus
            free = [g for g in range(hosts[h].gpus) if g not in claimed[h]]
            runs = [
                free[i : i + n]
                for i in range(len(free) - n + 1)
                if free[i + n - 1] - free[i] == n - 1
            ]
            # no free run: the free GPUs, then shared ones (never a multi-node part's)
            shareable = sorted((g for g in range(hosts[h].gpus) if g not in held),
                               key=lambda g: (g in claimed[h], g))  # fmt: skip
            ids = tuple(sorted(runs[0] if runs else shareable[:n]))
            if len(ids) < n:
                continue  # not enough besides the multi-node part: the overlap check says so
            single[h][name] = svc.model_copy(update={"gpus": ids})
            shared = sorted(set(ids) & claimed[h])
            claimed[h] |= set(ids)
            notes.append(
                f"{name}: placed on GPU {','.join(map(str, ids))} of host '{h}' (asked for {n}; "
                "GPUs of a model over several hosts are left to it"
                + (f"; shares GPU {','.join(map(str, shared))})" if shared else ")")
            )


def _stack_wide(note: str) -> bool:
    return note.startswith("project name ")


def _cross_host(
    stack: Stack, services: list[ServicePlan], multi: Mapping[str, Service], problems: list[str]
) -> None:
    """What no single host's plan sees: served names over the stack, ports on an address two
    hosts share (or host networking), GPUs a multi-node part holds."""
    assert stack.hosts is not None
    names: dict[str, str] = {}
    for s in services:
        if s.replica_of:
            continue
        if s.served_name in names and names[s.served_name] != s.name:
            problems.append(
                f"service '{s.name}', field 'served_name': {s.served_name!r} is already served by "
                f"'{names[s.served_name]}' (on another host); served names are unique in a stack"
            )
        names.setdefault(s.served_name, s.name)
    taken: dict[tuple[str, int], str] = {}

    def claim(host: str, port: int, what: str) -> None:
        key = (api_address(stack, host), port)
        if key in taken and taken[key] != what:
            problems.append(
                f"{what}: port {port} on {key[0]} (host '{host}') is already used by "
                f"{taken[key]}; choose another"
            )
        taken.setdefault(key, what)

    for s in services:
        if s.nodes:
            continue
        if s.published and s.host is not None:
            claim(s.host, s.port, f"service '{s.replica_of or s.name}'")
    for name, svc in multi.items():
        assert svc.hosts is not None and svc.port is not None  # plan_service required both
        claim(svc.hosts[0], svc.port, f"service '{name}'")
        for h in svc.hosts:
            for port in multinode.used_ports(stack, svc):
                claim(h, port, f"service '{name}' (its {multinode.backend_of(stack, svc)} cluster)")
        for h in svc.hosts:
            overlap = [
                s.name
                for s in services
                if s.host == h and not s.nodes and set(s.gpus) & set(_part(services, name, h).gpus)
            ]
            if overlap:
                problems.append(
                    f"service '{name}': its GPUs on host '{h}' are also given to "
                    f"{', '.join(overlap)} (placed there automatically?); a model over several "
                    "hosts needs its GPUs alone: give those services explicit gpus"
                )


def _part(services: list[ServicePlan], name: str, host: str) -> NodePart:
    sp = next(s for s in services if s.name == name and s.nodes)
    return next(p for p in sp.nodes if p.host == host)


def plan_hosts(plan: Plan) -> list[str]:
    """The hosts that run something for ``plan``, in the stack's order."""
    assert plan.stack.hosts is not None
    used = {s.host for s in plan.services} | {p.host for s in plan.services for p in s.nodes}
    if plan.gateway is not None:
        used.add(plan.gateway.host)
    return [h for h in plan.stack.hosts if h in used]


def host_view(plan: Plan, host: str) -> Plan:
    """``host``'s single-host plan: its services (not the parts of multi-node services)."""
    mine = tuple(s for s in plan.services if s.host == host and not s.nodes)
    names = {s.replica_of or s.name for s in mine}
    specs = {n: svc for n, svc in plan.stack.services.items() if n in names}
    return Plan(
        stack=host_stack(plan.stack, host, specs),
        services=mine,
        notes=tuple(n for n in plan.notes if n.startswith(f"host '{host}': ")),
        warnings=tuple(w for w in plan.warnings if w.startswith(f"host '{host}': ")),
        gateway=plan.gateway if plan.gateway is not None and plan.gateway.host == host else None,
    )


# --- rendering -------------------------------------------------------------------------------


def render_host(plan: Plan, host: str, options: RenderOptions | None = None) -> str:
    """The compose file of ``host``: its services, and its parts of multi-node services."""
    assert plan.stack.hosts is not None
    options = options or RenderOptions()
    view = host_view(plan, host)
    ctx = compose_context(view, options)
    parts = [
        multinode.compose_service(view, s, part, options)
        for s in plan.services
        for part in s.nodes
        if part.host == host
    ]
    ctx["services"] = parts + ctx["services"]
    for svc in ctx["services"]:
        svc["labels"] = sorted([*svc["labels"], ("kit.host", host)])
    e = plan.stack.hosts[host]
    ctx["host"] = (
        f"host '{host}' of {len(plan.stack.hosts)} ({describe_engine(e)}): {e.gpus} x "
        f"{e.gpu_model or 'GPU'} {e.memory_gib:g} GiB"
    )
    return environment().get_template("compose.yaml.j2").render(**ctx)


def compose_texts(plan: Plan, options: RenderOptions | None = None) -> dict[str, str]:
    """Every compose file of ``plan`` by host ("" for a stack of one host)."""
    if plan.stack.hosts is None:
        from kit.render import render_compose

        return {"": render_compose(plan, options)}
    return {h: render_host(plan, h, options) for h in plan_hosts(plan)}


# --- engines ---------------------------------------------------------------------------------


class HostProject(Project):
    """The compose project of one host of a stack with ``hosts:``, on that host's engine."""

    def __init__(
        self,
        plan: Plan,
        host: str,
        *,
        options: RenderOptions | None = None,
        folder: Path,
        client: DockerClient | None = None,
        docker: DockerClient | None = None,
    ) -> None:
        assert plan.stack.hosts is not None
        self.whole = plan
        self.host = host
        self.entry = plan.stack.hosts[host]
        super().__init__(
            host_view(plan, host),
            options=options,
            client=client,
            docker=docker or DockerClient(**engine_kwargs(self.entry)),
        )
        self.folder = folder
        self.compose_file = folder / "docker-compose.yml"
        self.env_file = folder / ".env"

    def compose_text(self) -> str:
        return render_host(self.whole, self.host, self.options)

    def engine_kwargs(self) -> dict[str, Any]:
        return engine_kwargs(self.entry)

    def execute(self, container_id: str, argv: Sequence[str]) -> str:
        """Run ``argv`` in a running container; raises :class:`EngineError`."""
        try:
            return str(self.client.container.execute(container_id, list(argv)))
        except DockerException as exc:
            text = (exc.stderr or exc.stdout or str(exc)).strip()
            raise EngineError(
                f"host '{self.host}': {' '.join(argv)} failed: {text[-300:]}"
            ) from None


class HostsEngine:
    """The :class:`~kit.engine.Engine` of a stack with ``hosts:``: every host's project, one
    view. ``clients``: python-on-whales clients for engine-wide calls per host (tests)."""

    def __init__(
        self,
        plan: Plan,
        *,
        options: RenderOptions | None = None,
        clients: Mapping[str, DockerClient] | None = None,
    ) -> None:
        self.plan = plan
        self.name = plan.stack.name
        self.options = options or RenderOptions()
        self.folder = project_folder(self.name)
        #: where the hosts' compose files are (one folder each)
        self.compose_file = self.folder / "hosts"
        self.projects: dict[str, HostProject] = {
            h: HostProject(plan, h, options=self.options, folder=self.folder / "hosts" / h,
                           docker=(clients or {}).get(h))
            for h in plan_hosts(plan)
        }  # fmt: skip
        self._owner: dict[str, tuple[str, NodePart | None, ServicePlan | None]] = {}
        self._lock = threading.Lock()
        self._cluster: dict[str, tuple[float, str | None]] = {}
        #: the last state seen of each part of a multi-node service, by container id
        self._parts_seen: dict[str, ContainerState] = {}

    # --- files and actions ----------------------------------------------------------------

    def available(self) -> str | None:
        for h, p in self.projects.items():
            why = p.available()
            if why:
                fix = host_endpoints.advice(h, p.entry, why)
                why += f"; {fix}" if fix else ""
                return f"host '{h}' ({describe_engine(p.entry)}): {why}"
        return None

    def write(self) -> bool:
        changed = [p.write() for p in self.projects.values()]
        return any(changed)

    def start(self, services: Sequence[str]) -> None:
        """Start ``services``: a multi-node one head first, then its workers."""
        plain: dict[str, list[str]] = defaultdict(list)
        g = self.plan.gateway
        for name in services:
            if g is not None and g.host is not None and name == g.name:
                plain[g.host].append(name)  # the gateway: on its host (kit.gateway_hosts)
                continue
            s = _by_name(self.plan, name)
            if s.nodes:
                for part in sorted(s.nodes, key=lambda p: p.rank):
                    self._run(
                        part.host, "start", lambda p=part: self.projects[p.host].start([p.name])
                    )
            else:
                assert s.host is not None
                plain[s.host].append(name)
        for h, names in plain.items():
            self._run(h, "start", lambda h=h, names=names: self.projects[h].start(names))

    def down(self, *, volumes: bool = False) -> None:
        """Take every host's project down; tries them all, then reports the hosts that failed."""
        failed = []
        for h, p in self.projects.items():
            try:
                p.down(volumes=volumes)
            except EngineError as exc:
                failed.append(f"host '{h}': {exc.message}")
        if failed:
            raise EngineError("; ".join(failed))

    def remove_folder(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    # --- looking ----------------------------------------------------------------------------

    def states(self) -> dict[str, ContainerState]:
        """Containers by service over every host (each says where it runs); a multi-node
        service's state is its head's, or the first failed worker's. Worker parts are listed
        under their own names too."""
        per_host = {h: self._run(h, "ps", p.states) for h, p in self.projects.items()}
        out: dict[str, ContainerState] = {}
        for s in self.plan.services:
            if not s.nodes:
                assert s.host is not None
                c = per_host.get(s.host, {}).get(s.name)
                if c is not None:
                    out[s.name] = dataclasses.replace(c, part=f"container on host '{s.host}'")
                    self._remember(c.id, s.host, None, s)
                continue
            failed = None
            for part in s.nodes:
                c = per_host.get(part.host, {}).get(part.name)
                if c is None:
                    continue
                c = dataclasses.replace(c, part=multinode.describe_part(s, part))
                self._remember(c.id, part.host, part, s)
                self._parts_seen[c.id] = c
                if part.rank == 0:
                    out[s.name] = out[f"{s.name}/head"] = c  # /head: the head, even when failed
                else:
                    out[part.name] = c
                    if failed is None and (c.stopped or c.status == "restarting"):
                        failed = dataclasses.replace(c, service=s.name)
            if failed is not None:
                out[s.name] = failed
        g = self.plan.gateway
        if g is not None and g.host is not None:
            c = per_host.get(g.host, {}).get(g.name)
            if c is not None:
                out[g.name] = dataclasses.replace(c, part=f"container on host '{g.host}'")
                self._remember(c.id, g.host, None, None)
        return out

    def execute(self, container_id: str, argv: Sequence[str]) -> str:
        """Run ``argv`` in a running container of any host; raises :class:`EngineError`."""
        project, _, _ = self._project_of(container_id)
        if project is None:
            raise EngineError(f"container {container_id[:12]} not seen on any host")
        return project.execute(container_id, argv)

    def _remember(self, cid: str, host: str, part: NodePart | None, s: ServicePlan | None) -> None:
        with self._lock:
            self._owner[cid] = (host, part, s)

    def _project_of(
        self, cid: str
    ) -> tuple[HostProject | None, NodePart | None, ServicePlan | None]:
        with self._lock:
            found = self._owner.get(cid)
        if found is None:
            return None, None, None
        host, part, s = found
        return self.projects.get(host), part, s

    def container_logs(self, container_id: str, *, tail: int = 60) -> str:
        """One container's logs; a worker part's come with its head's (what the head saw of it)."""
        project, part, s = self._project_of(container_id)
        if project is None:
            return "(logs unavailable: container not seen on any host)"
        if part is not None:  # a multi-node engine logs its root cause long before the end
            tail = max(tail, PART_LOG_TAIL)
        text = project.container_logs(container_id, tail=tail)
        if part is not None and part.rank > 0 and s is not None:
            head = s.nodes[0]
            head_id = self._container_id(head)
            if head_id is not None:
                text = text.rstrip("\n") + (
                    f"\n--- its head {head.name} on host '{head.host}' ---\n"
                    + self.projects[head.host].container_logs(head_id, tail=tail)
                )
        seen = self._parts_seen.get(container_id)
        if part is not None and part.rank > 0 and seen is not None and seen.stopped:
            # what no log of a killed process says: that this node of the world is gone
            code = seen.exit_code
            how = f" (killed by signal {code - 128})" if code is not None and code > 128 else ""
            text = text.rstrip("\n") + (
                f"\n[kit] node part {part.name} on host '{part.host}' stopped: exit status "
                f"{code}{how}\n"
            )
        return text

    def _container_id(self, part: NodePart) -> str | None:
        with self._lock:
            return next((cid for cid, (_h, p, _s) in self._owner.items() if p == part), None)

    def visible_devices(self, container_id: str) -> str | None:
        project, _, _ = self._project_of(container_id)
        return None if project is None else project.visible_devices(container_id)

    def logs(self, service: str | None = None, *, tail: int | None = 200) -> str:
        chunks = []
        for h, name in self._sources(service):
            body = self.projects[h].logs(name, tail=tail)
            chunks.append(f"==> host '{h}'{f' {name}' if name else ''} <==\n{body}")
        return "".join(c if c.endswith("\n") else c + "\n" for c in chunks)

    def follow_logs(
        self, service: str | None = None, *, tail: int | None = 200
    ) -> Iterable[tuple[str, bytes]]:
        """Every source's lines as they come (one thread per host part), until all stop."""
        sources = self._sources(service)
        lines: queue.Queue[tuple[str, bytes] | None] = queue.Queue()

        def pump(h: str, name: str | None) -> None:
            try:
                for src, line in self.projects[h].follow_logs(name, tail=tail):
                    lines.put((f"{h}/{src}", line))
            except DockerException:
                pass
            finally:
                lines.put(None)

        for h, name in sources:
            threading.Thread(target=pump, args=(h, name), daemon=True).start()
        running = len(sources)
        while running:
            item = lines.get()
            if item is None:
                running -= 1
            else:
                yield item

    def _sources(self, service: str | None) -> list[tuple[str, str | None]]:
        if service is None:
            return [(h, None) for h in self.projects]
        s = _by_name(self.plan, service)
        if s.nodes:
            return [(p.host, p.name) for p in s.nodes]
        assert s.host is not None
        return [(s.host, s.name)]

    # --- multi-node services -----------------------------------------------------------------

    def cluster_waiting(self, s: ServicePlan) -> str | None:
        """None once every node of multi-node service ``s`` has joined, else what is missing
        (looked at every :data:`CLUSTER_POLL_S` seconds; once formed, never again)."""
        now = time.monotonic()
        last = self._cluster.get(s.name)
        if last is not None and (last[1] is None or now - last[0] < CLUSTER_POLL_S):
            return last[1]
        why = self._cluster_state(s)
        self._cluster[s.name] = (now, why)
        return why

    def _cluster_state(self, s: ServicePlan) -> str | None:
        head = s.nodes[0]
        head_id = self._container_id(head)
        if head_id is None:
            return "head container not seen yet"
        if s.recipe == "ray":
            try:
                text = self.projects[head.host].execute(head_id, ["ray", "status"])
            except EngineError:
                return "Ray head not answering yet"
            return multinode.ray_formed(s, text)
        logs = []
        for part in s.nodes:
            cid = self._container_id(part)
            if cid is not None:
                logs.append(self.projects[part.host].container_logs(cid, tail=RANK_LOG_TAIL))
        return multinode.native_formed(s, logs)

    def _run(self, host: str, what: str, fn: Any) -> Any:
        try:
            return fn()
        except EngineError as exc:
            if exc.message.startswith(f"host '{host}'"):
                raise
            raise EngineError(f"host '{host}': {exc.message}", hint=exc.hint) from None


def _by_name(plan: Plan, name: str) -> ServicePlan:
    for s in plan.services:
        if s.name == name:
            return s
    return plan.service(name)


def make_engine(plan: Plan, options: RenderOptions | None = None) -> Project | HostsEngine:
    """The engine of ``plan``: one project, or one per host for a stack with ``hosts:``."""
    if plan.stack.hosts is not None:
        return HostsEngine(plan, options=options)
    from kit import engine  # looked up at call time: tests swap kit.engine.Project

    return engine.Project(plan, options=options)


def local_model_paths(plan: Plan, s: ServicePlan) -> bool:
    """Whether ``s``'s model folder is a path on this machine (its host's engine is local)."""
    if plan.stack.hosts is None or s.host is None:
        return True
    return all(is_local(plan.stack.hosts[h]) for h in {s.host, *(p.host for p in s.nodes)})


def record_hosts(plan: Plan) -> dict[str, Any]:
    """The deployment record's view of the hosts: engine, addresses, what runs where."""
    assert plan.stack.hosts is not None
    out: dict[str, Any] = {}
    for h in plan_hosts(plan):
        e = plan.stack.hosts[h]
        out[h] = {
            "engine": describe_engine(e),
            "address": e.address,
            "api_address": api_address(plan.stack, h),
            "services": [s.name for s in plan.services if s.host == h and not s.nodes],
            "parts": [p.name for s in plan.services for p in s.nodes if p.host == h],
        }
    return out


# --- views for people ------------------------------------------------------------------------


def pick_host_file(texts: Mapping[str, str], host: str | None) -> str:
    """The one compose file ``kit render`` prints: the stack's, or ``host``'s."""
    from kit.errors import KitError

    if "" in texts:
        if host is not None:
            raise KitError(f"--host {host}: the stack has one host (host:), so one compose file")
        return texts[""]
    if host is None:
        raise KitError(
            f"the stack spans hosts {', '.join(texts)}: pick one with --host HOST, or write "
            "one file per host with --dir DIR"
        )
    if host not in texts:
        raise KitError(
            f"no compose file for host {host!r}; hosts that run something: {', '.join(texts)}"
        )
    return texts[host]


def print_plan(out: Any, plan: Plan) -> None:
    """``kit plan`` of a stack with ``hosts:``: each host's plan, then the models over hosts."""
    from kit.report import command_block
    from kit.report import print_plan as print_one

    assert plan.stack.hosts is not None
    stack = plan.stack
    out.print(
        f"stack '{stack.name}' over {len(stack.hosts)} hosts: "
        + ", ".join(f"{h} ({describe_engine(e)}, {e.gpus} GPUs)" for h, e in stack.hosts.items()),
        style="bold",
        soft_wrap=True,
    )
    for h in plan_hosts(plan):
        view = host_view(plan, h)
        out.rule(f"host '{h}'")
        if view.services:
            print_one(out, view)
        for s in plan.services:
            for part in s.nodes:
                if part.host == h:
                    out.print(
                        f"  + GPU {','.join(map(str, part.gpus))} (not in the map above): "
                        f"{multinode.describe_part(s, part)}, part of a model over several "
                        "hosts (below)",
                        soft_wrap=True,
                        markup=False,
                    )
    multi = [s for s in plan.services if s.nodes]
    if multi:
        out.rule("models over several hosts")
    for s in multi:
        out.print(
            f"{s.name} ({s.kind}, {s.served_name}): {s.recipe} recipe, TP {s.tp} x PP {s.pp} over "
            f"{', '.join(p.host for p in s.nodes)}; API http://{s.api_address}:{s.port}",
            style="bold",
            soft_wrap=True,
            markup=False,
        )
        if s.fit is not None:
            out.print(f"  fit per GPU: {s.fit.describe()}", soft_wrap=True, markup=False)
        for part in s.nodes:
            env = " ".join(f"{k}={v}" for k, v in sorted(part.env.items()) if k.isupper())
            out.print(f"  rank {part.rank} on host '{part.host}' ({part.name}): {env}",
                      soft_wrap=True, markup=False)  # fmt: skip
            lines = command_block(part.command) if part.entrypoint[:2] == ("vllm", "serve") else (
                " ".join([*part.entrypoint[:2], *part.command]) if part.entrypoint[0] == "ray"
                else "ray start $KIT_RAY_START && " + command_block(part.command)
            )  # fmt: skip
            out.print(
                "\n".join("    " + x for x in lines.splitlines()), soft_wrap=True, markup=False
            )
    cross = [n for n in plan.notes if not n.startswith("host '")]
    warns = [w for w in plan.warnings if not w.startswith("host '")]
    for title, items, style in (("notes", cross, ""), ("warnings", warns, "yellow")):
        if items:
            out.print(title, style="bold")
            for item in items:
                out.print(f"  - {item}", style=style, soft_wrap=True, markup=False)


def doctor_hosts(plan: Plan, *, clients: Mapping[str, DockerClient] | None = None) -> list[Any]:
    """``kit doctor`` for a stack with ``hosts:``: every host's engine, NVIDIA runtime and the
    ports there; this machine's checks (GPUs, model folders, disk) for hosts whose engine runs
    here. Each finding's check names its host."""
    from kit.doctor import Finding, LocalDocker, doctor

    assert plan.stack.hosts is not None
    out: list[Finding] = []
    for h in plan_hosts(plan):
        entry = plan.stack.hosts[h]
        client = (clients or {}).get(h) or DockerClient(**engine_kwargs(entry))
        facts = LocalDocker(client)
        view = host_view(plan, h)
        if is_local(entry):
            found = doctor(view, docker=facts)
        else:
            why = facts.engine_problem()
            found = [Finding("docker engine", "fail" if why else "ok", why or "the engine answers",
                             (host_endpoints.advice(h, entry, why)
                              or f"start it, or fix hosts.{h}.docker / context") if why else "")]  # fmt: skip
            runtimes = facts.runtimes()
            found.append(
                Finding("NVIDIA runtime", "ok", f"runtimes: {', '.join(runtimes)}")
                if any("nvidia" in r for r in runtimes)
                else Finding(
                    "NVIDIA runtime",
                    "warn",
                    f"no nvidia runtime listed ({', '.join(runtimes) or 'none'}); "
                    "device_ids reservations need the NVIDIA Container Toolkit's hook",
                    "check on the host: `kit doctor` there",
                )
            )
        for s in plan.services:
            for part in s.nodes:
                if part.host == h and is_local(entry):
                    found += _cluster_ports(plan, s, h)
        out += [dataclasses.replace(f, check=f"{h}: {f.check}") for f in found]
    return out


def _cluster_ports(plan: Plan, s: ServicePlan, host: str) -> list[Any]:
    """The fixed ports a multi-node service listens on in ``host``'s network."""
    from kit.client import port_is_open
    from kit.doctor import Finding

    svc = plan.stack.services[s.name]
    address = api_address(plan.stack, host)
    ports = [p for p in multinode.used_ports(plan.stack, svc) if not _in_worker_range(plan, svc, p)]
    busy = [p for p in ports if port_is_open(address, p)]
    if busy:
        return [Finding(f"cluster ports of {s.name}", "warn", f"in use on {address}: "
                        f"{', '.join(map(str, busy))} (by this stack if it is up)",
                        "free them, or move multinode.port")]  # fmt: skip
    return [
        Finding(f"cluster ports of {s.name}", "ok", f"{len(ports)} fixed ports free on {address}")
    ]


def _in_worker_range(plan: Plan, svc: Service, port: int) -> bool:
    if multinode.backend_of(plan.stack, svc) != "ray":
        return False
    base = multinode.cluster_port(plan.stack, svc)
    ranges = (
        multinode.ray_ports(base, k, multinode.worker_ports(svc))
        for k in range(len(svc.hosts or ()))
    )
    return any(r.get("min-worker-port", 0) <= port <= r.get("max-worker-port", -1) for r in ranges)
