"""A whole stack as planned: its services in start order, the gateway and Prometheus, the
training jobs, and what the planner noted and warned.

Plain data (built by :func:`kit.plan.build_plan`, written into the deployment record and read
back by :mod:`kit.record`), so the commands that read a plan do not import the planners.
"""

from __future__ import annotations

from dataclasses import dataclass

from kit.errors import KitError
from kit.gateway_plan import GatewayPlan, ObservabilityPlan
from kit.service_plan import ServicePlan
from kit.spec import Stack
from kit.train.jobplan import JobPlan


@dataclass(frozen=True)
class Plan:
    stack: Stack
    #: in start order (largest first among services that share a GPU)
    services: tuple[ServicePlan, ...]
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    #: the stack's gateway and Prometheus (kit.gateway_plan), when the stack has them
    gateway: GatewayPlan | None = None
    observability: ObservabilityPlan | None = None
    #: the stack's training jobs (kit.train), run by `kit train`
    jobs: tuple[JobPlan, ...] = ()

    def gpu_map(self) -> dict[int, list[tuple[str, float]]]:
        """GPU -> its services; a stack with ``hosts:`` has one map per host
        (:func:`kit.hosts.host_view`)."""
        assert self.stack.host is not None, "a plan over several hosts: map each host's view"
        out: dict[int, list[tuple[str, float]]] = {g: [] for g in range(self.stack.host.gpus)}
        for s in self.services:
            for g in s.gpus:
                out[g].append((s.name, s.fraction))
        return out

    def service(self, name: str) -> ServicePlan:
        for s in self.services:
            if s.name == name:
                return s
        for s in self.services:  # a replicated service: its first replica (kit.replicas)
            if s.replica_of == name:
                return s
        known = ", ".join(s.name for s in self.services)
        raise KitError(f"stack '{self.stack.name}' has no service {name!r} (services: {known})")
