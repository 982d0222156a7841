"""From a validated :class:`~kit.spec.Stack` to a GPU plan: the entry point of planning.

A stack on one host is planned by :func:`kit.single_host_plan.build_single_host_plan`
(placement, memory fractions, start order and each service's engine command line); a stack
with ``hosts:`` by :func:`kit.hosts.build_hosts_plan`, which plans each host's part with the
single-host planner. Problems are collected and raised together as one
:class:`~kit.errors.StackError`, so the user fixes them in one pass.
"""

from __future__ import annotations

from kit.service_plan import CONTAINER_PORT, ServicePlan
from kit.single_host_plan import build_single_host_plan
from kit.spec import Stack
from kit.stack_plan import Plan

__all__ = ["CONTAINER_PORT", "Plan", "ServicePlan", "build_plan"]


def build_plan(stack: Stack, *, inspect_models: bool = True) -> Plan:
    """Validate ``stack`` against the host and plan it. Raises :class:`StackError`."""
    if (
        stack.host is None
        or any(s.host or s.hosts for s in stack.services.values())
        or (stack.gateway is not None and stack.gateway.host is not None)
    ):
        from kit.hosts import build_hosts_plan  # several hosts: each planned on its own

        return build_hosts_plan(stack, inspect_models=inspect_models)
    return build_single_host_plan(stack, inspect_models=inspect_models)
