"""What the plan holds about the stack's gateway and Prometheus: routes from each served model
name (and LoRA adapter) to the containers that serve it, and scrape targets.

Built by :func:`kit.plan.build_plan` from the stack's ``gateway:`` / ``observability:``
sections and the planned services; rendered by :mod:`kit.gateway_render`; written into the
deployment record with the rest of the plan. Only plain data here (the record reads it back).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kit.gateway_spec import POLICIES, Gateway, Observability

if TYPE_CHECKING:
    from kit.service_plan import ServicePlan

#: compose service names of the two auxiliary services
GATEWAY_SERVICE = "gateway"
PROMETHEUS_SERVICE = "prometheus"
#: ports inside their containers
GATEWAY_CONTAINER_PORT = 4000
PROMETHEUS_CONTAINER_PORT = 9090
#: the port every engine listens on inside its container (kit.plan.CONTAINER_PORT)
ENGINE_PORT = 8000


@dataclass(frozen=True)
class GatewayRoute:
    """One model name the gateway serves and the compose services behind it."""

    model: str
    kind: str
    #: compose service names (replicas), each reached at http://NAME:8000
    backends: tuple[str, ...]
    #: the stack's service this route belongs to
    service: str
    #: a LoRA adapter served by ``service`` (not the base model)
    lora: bool = False
    #: with ``hosts:`` (kit.gateway_hosts): each backend's API base, in the order of
    #: ``backends`` (empty: http://NAME:8000/v1 on the stack's network)
    api_bases: tuple[str, ...] = ()


@dataclass(frozen=True)
class GatewayPlan:
    name: str
    engine: str
    image: str
    port: int
    bind_address: str
    #: LiteLLM's routing_strategy
    strategy: str
    policy: str
    retries: int
    cooldown: int
    timeout: int
    routes: tuple[GatewayRoute, ...]
    #: the stack has an API key file: the gateway checks VLLM_API_KEY (its master key)
    api_key: bool
    workers: int = 1
    #: with ``hosts:``: the host it runs on
    host: str | None = None

    def models(self) -> tuple[str, ...]:
        return tuple(r.model for r in self.routes)


@dataclass(frozen=True)
class ScrapeTarget:
    job: str
    #: compose service name and port on the stack's network
    host: str
    port: int
    #: the stack's service (replicas share it) and the kind
    service: str
    kind: str


@dataclass(frozen=True)
class ObservabilityPlan:
    name: str
    image: str
    port: int
    bind_address: str
    scrape_interval: int
    targets: tuple[ScrapeTarget, ...]
    #: Grafana (None: not in the stack)
    grafana_port: int | None = None
    grafana_bind_address: str | None = None
    grafana_image: str | None = None


def lora_names(engine_args: tuple[str, ...]) -> tuple[str, ...]:
    """Adapter names of ``--lora-modules`` (``name=path`` or vLLM's JSON form) in a command."""
    out: list[str] = []
    taking = False
    for arg in engine_args:
        if arg.startswith("--lora-modules"):
            taking = True
            if "=" in arg and arg.startswith("--lora-modules="):
                out.extend(_lora_name(arg.split("=", 1)[1]))
            continue
        if taking and arg.startswith("--"):
            taking = False
        if taking:
            out.extend(_lora_name(arg))
    return tuple(dict.fromkeys(out))


def _lora_name(token: str) -> list[str]:
    token = token.strip()
    if token.startswith("{"):
        try:
            name = json.loads(token).get("name")
        except (ValueError, AttributeError):
            return []
        return [name] if isinstance(name, str) and name else []
    name, sep, _ = token.partition("=")
    return [name] if sep and name else []


def build_gateway(
    spec: Gateway,
    services: tuple[ServicePlan, ...],
    *,
    bind_address: str,
    api_key: bool,
    order: tuple[str, ...] = (),
) -> GatewayPlan:
    """Routes in the stack's order of services (``order``), replicas by name."""
    routes: list[GatewayRoute] = []
    groups: dict[str, list[ServicePlan]] = {}
    for s in services:
        groups.setdefault(s.replica_of or s.name, []).append(s)
    rank = {name: i for i, name in enumerate(order)}
    for service, members in sorted(groups.items(), key=lambda kv: rank.get(kv[0], len(rank))):
        members.sort(key=lambda m: m.name)
        first = members[0]
        backends = tuple(m.name for m in members)
        routes.append(GatewayRoute(first.served_name, first.kind, backends, service))
        for name in lora_names(first.engine_args):
            routes.append(GatewayRoute(name, first.kind, backends, service, lora=True))
    return GatewayPlan(
        name=GATEWAY_SERVICE,
        engine=spec.engine,
        image=spec.image,
        port=spec.port,
        bind_address=spec.bind_address or bind_address,
        strategy=POLICIES[spec.policy],
        policy=spec.policy,
        retries=spec.retries,
        cooldown=spec.cooldown,
        timeout=spec.timeout,
        routes=tuple(routes),
        api_key=api_key,
        workers=spec.workers,
    )


def build_observability(
    spec: Observability,
    services: tuple[ServicePlan, ...],
    gateway: GatewayPlan | None,
    *,
    bind_address: str,
) -> ObservabilityPlan:
    targets = [
        ScrapeTarget("vllm", s.name, ENGINE_PORT, s.replica_of or s.name, s.kind) for s in services
    ]
    if gateway is not None:
        targets.append(
            ScrapeTarget("gateway", gateway.name, GATEWAY_CONTAINER_PORT, gateway.name, "gateway")
        )
    return ObservabilityPlan(
        name=PROMETHEUS_SERVICE,
        image=spec.image,
        port=spec.port,
        bind_address=spec.bind_address or bind_address,
        scrape_interval=spec.scrape_interval,
        targets=tuple(targets),
        grafana_port=spec.grafana.port if spec.grafana else None,
        grafana_bind_address=(spec.grafana.bind_address or bind_address) if spec.grafana else None,
        grafana_image=spec.grafana.image if spec.grafana else None,
    )


def exposure_warnings(gateway: GatewayPlan | None, obs: ObservabilityPlan | None) -> list[str]:
    """The gateway or Prometheus published on every interface."""
    out = []
    if gateway is not None and gateway.bind_address in ("0.0.0.0", "::"):
        key = (
            "an API key is required"
            if gateway.api_key
            else "NO API key is set: anyone who reaches this host can use every model"
        )
        out.append(
            f"gateway: bind_address {gateway.bind_address} publishes port {gateway.port} on every "
            f"interface; {key}. Use 127.0.0.1 unless other machines must connect"
        )
    if obs is not None and obs.bind_address in ("0.0.0.0", "::"):
        out.append(
            f"observability: Prometheus on {obs.bind_address}:{obs.port} has no authentication; "
            "anyone who reaches this host can read the stack's metrics"
        )
    return out
