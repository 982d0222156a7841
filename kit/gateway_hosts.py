"""The gateway of a stack over several hosts (``hosts:``), and replicas of one model placed on
different hosts behind it.

- ``gateway.host`` places the gateway on one host (default: the first of ``hosts:``).
- A service with ``replicas: N`` and ``hosts: [h1, ..., hN]`` runs one replica on each listed
  host (a host may repeat). ``gpus`` is per replica, on its host (a count, or ids; two replicas
  on one host take a count). Replicas are numbered host by host in the order their hosts first
  appear (``hosts: [a, b]``: ``chat-1`` on a, ``chat-2`` on b); a published ``port`` gives them
  consecutive ports in that numbering.
- Engines on the gateway's host are reached on its stack network (``http://NAME:8000/v1``);
  engines on another host at that host's ``address`` and the port they publish there. Those
  hosts bind their ports to ``address`` unless their ``bind_address`` says otherwise (never
  every interface by default), so the engines of a host the gateway reaches must have a
  ``port`` and the host an ``address`` that is not loopback.

Planning each host's part stays the single-host planner's job (through :mod:`kit.hosts`);
this module splits a replicated service over its hosts, checks what only the gateway needs and
adds each backend's API base to the gateway's routes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

from kit.gateway_plan import ENGINE_PORT, GatewayPlan, build_gateway
from kit.host_addresses import bind_address, gateway_host, is_local
from kit.replicas import replica_name

if TYPE_CHECKING:
    from kit.gateway_spec import Gateway
    from kit.service_plan import ServicePlan
    from kit.spec import Service, Stack

_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_EVERY = ("0.0.0.0", "::")


def on_host(stack: Stack, host: str) -> Gateway | None:
    """The ``gateway:`` section of ``host``'s single-host stack (None: it runs elsewhere)."""
    if stack.gateway is None or gateway_host(stack) != host:
        return None
    return stack.gateway.model_copy(update={"host": None})


def is_replicated_over_hosts(svc: Service) -> bool:
    return svc.hosts is not None and svc.replicas > 1


@dataclasses.dataclass(frozen=True)
class HostShare:
    """One host's replicas of a service placed over several hosts."""

    #: the single-host service planned there (``replicas`` = how many run there)
    service: Service
    #: the global replica numbers of those replicas (1-based), in order
    numbers: tuple[int, ...]

    def global_name(self, name: str, planned: str) -> str:
        """The global compose name of the replica the host's planner called ``planned``."""
        if len(self.numbers) == 1:
            return replica_name(name, self.numbers[0])
        local = int(planned.rsplit("-", 1)[1])
        return replica_name(name, self.numbers[local - 1])


def split_over_hosts(
    name: str, svc: Service, known: Mapping[str, object], problems: list[str]
) -> dict[str, HostShare]:
    """Each host's share of ``svc`` (``replicas: N`` with ``hosts: [...]``); problems otherwise."""
    where = f"service '{name}'"
    hosts = svc.hosts or ()
    bad = [h for h in hosts if h not in known]
    if bad:
        problems.append(
            f"{where}, field 'hosts': unknown host {', '.join(bad)} (hosts: {', '.join(known)})"
        )
        return {}
    if len(hosts) != svc.replicas:
        problems.append(
            f"{where}, field 'hosts': {len(hosts)} hosts for replicas: {svc.replicas}; with "
            "replicas, list one host per replica (e.g. replicas: 2, hosts: [a, b]; a host may "
            "repeat)"
        )
        return {}
    if svc.multinode is not None:
        problems.append(
            f"{where}, field 'multinode': replicas over hosts each run on one host; a model over "
            "several hosts (multinode) runs once"
        )
    if svc.host is not None:
        problems.append(f"{where}: give host (one) or hosts (replicas over hosts), not both")
    order = list(dict.fromkeys(hosts))
    out: dict[str, HostShare] = {}
    first = 1
    for h in order:
        k = hosts.count(h)
        if k > 1 and isinstance(svc.gpus, tuple):
            problems.append(
                f"{where}, field 'gpus': {k} replicas on host '{h}' with GPU ids {list(svc.gpus)} "
                "would share them; give a GPU count per replica"
            )
        update = {
            "hosts": None,
            "host": None,
            "replicas": k,
            "served_name": svc.served_name or name,
            "port": None if svc.port is None else svc.port + first - 1,
        }
        out[h] = HostShare(svc.model_copy(update=update), tuple(range(first, first + k)))
        first += k
    return out


def rename_replicas(
    services: list[ServicePlan], shares: Mapping[str, HostShare], host: str
) -> list[ServicePlan]:
    """``host``'s planned services with its replicas of services over hosts renamed to their
    global names (``replica_of`` set), and the start dependencies on them too."""
    names: dict[str, str] = {}
    for s in services:
        owner = s.replica_of or s.name
        share = shares.get(owner)
        if share is not None:
            names[s.name] = share.global_name(owner, s.name)
    out = []
    for s in services:
        update: dict[str, object] = {"depends_on": tuple(names.get(d, d) for d in s.depends_on)}
        if s.name in names:
            update.update(name=names[s.name], replica_of=s.replica_of or s.name)
        out.append(dataclasses.replace(s, **update))  # type: ignore[arg-type]
    return out


def placement_problems(
    stack: Stack,
    placed: Mapping[str, Mapping[str, Service]],
    multi: Mapping[str, Service],
) -> list[str]:
    """What the gateway needs of the placement (``placed``: host -> its services): a host it
    exists on, a port and a reachable address for every engine on another host, no model over
    several hosts (not routed yet)."""
    assert stack.hosts is not None and stack.gateway is not None
    out = []
    g = gateway_host(stack)
    if stack.gateway.host is not None and stack.gateway.host not in stack.hosts:
        return [
            f"field 'gateway.host': unknown host {stack.gateway.host!r} "
            f"(hosts: {', '.join(stack.hosts)})"
        ]
    for name in multi:
        out.append(
            f"service '{name}', field 'hosts': a model over several hosts is not routed by the "
            "gateway yet; run it in a stack without gateway:, or use replicas over hosts "
            "(replicas: N, one host per replica)"
        )
    for h, services in placed.items():
        if h == g or not services:
            continue
        e = stack.hosts[h]
        if not e.address:
            out.append(
                f"host '{h}', field 'address': required: the gateway on host '{g}' reaches the "
                f"engines of host '{h}' ({', '.join(services)}) at this address"
            )
        elif e.address in _LOOPBACK:
            out.append(
                f"host '{h}', field 'address': {e.address} is the gateway container itself, not "
                f"host '{h}'; give an address of host '{h}' that host '{g}' reaches"
            )
        elif e.bind_address and e.bind_address not in (*_EVERY, e.address):
            out.append(
                f"host '{h}', field 'bind_address': {e.bind_address} is not its address "
                f"{e.address}, where the gateway on host '{g}' reaches its engines; omit "
                "bind_address (it defaults to address)"
            )
        for name, svc in services.items():
            if svc.port is None:
                out.append(
                    f"service '{name}', field 'port': required for its replica on host '{h}': "
                    f"the gateway on host '{g}' reaches it at {e.address or h}:PORT"
                )
    return out


def build_hosts_gateway(stack: Stack, services: tuple[ServicePlan, ...]) -> GatewayPlan:
    """The gateway's plan: routes over every host's engines, each with its API base."""
    assert stack.hosts is not None and stack.gateway is not None
    g = gateway_host(stack)
    assert g is not None
    plan = build_gateway(
        stack.gateway,
        services,
        bind_address=bind_address(stack, g),
        api_key=stack.api_key_file() is not None,
        order=tuple(stack.services),
    )
    by_name = {s.name: s for s in services}
    routes = []
    for r in plan.routes:
        bases = tuple(api_base(stack, by_name[b], g) for b in r.backends)
        routes.append(dataclasses.replace(r, api_bases=bases))
    return dataclasses.replace(plan, routes=tuple(routes), host=g)


def exposure_warnings(stack: Stack, services: tuple[ServicePlan, ...]) -> list[str]:
    """Engines the gateway reaches on another host listen beyond loopback there: without an API
    key anyone who reaches that address uses them, bypassing the gateway."""
    assert stack.hosts is not None
    g = gateway_host(stack)
    if g is None or stack.api_key_file() is not None:
        return []
    out = []
    for s in services:
        if s.host is None or s.host == g or not s.published:
            continue
        bind = bind_address(stack, s.host)
        if bind not in _LOOPBACK:
            out.append(
                f"{s.name}: published on {bind}:{s.port} (host '{s.host}') for the gateway on "
                f"host '{g}' with NO API key: anyone who reaches {bind} can use the model "
                "without the gateway; set defaults.api_key_env_file (an env file with "
                "VLLM_API_KEY=...)"
            )
    return out


def api_base(stack: Stack, s: ServicePlan, gateway_on: str) -> str:
    if s.host == gateway_on:
        return f"http://{s.name}:{ENGINE_PORT}/v1"
    assert stack.hosts is not None and s.host is not None
    address = stack.hosts[s.host].address or ""
    if ":" in address:  # an IPv6 address goes in brackets in a URL
        address = f"[{address}]"
    return f"http://{address}:{s.port}/v1"


def gateway_address(stack: Stack, gateway: GatewayPlan) -> str | None:
    """Where the kit reaches the gateway of a stack over hosts when it runs on a remote host
    (None: on this machine, at its bind address)."""
    if stack.hosts is None or gateway.host is None or is_local(stack.hosts[gateway.host]):
        return None
    entry = stack.hosts[gateway.host]
    if entry.api_address:
        return entry.api_address
    return entry.address if gateway.bind_address in _EVERY else gateway.bind_address
