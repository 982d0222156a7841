"""``kit smoke`` through the gateway: every model of the stack (and every LoRA adapter) checked
with real requests at the one endpoint clients use, with the same checks as a direct smoke
(:mod:`kit.smoke`), plus the gateway's own: ``/v1/models`` lists every model, and a wrong API
key is refused when the stack has one."""

from __future__ import annotations

from dataclasses import replace

from kit import replicas, wire
from kit.client import Endpoint
from kit.gateway_probe import gateway_endpoint
from kit.smoke import Check, checks_for, run_check
from kit.smoke_target import Failed, Target
from kit.stack_plan import Plan

#: checks that probe a server rather than a model: the gateway runs its own instead
_SERVER_CHECKS = ("health",)


def smoke_via_gateway(
    plan: Plan, services: list[str] | None = None, *, max_tokens: int = 64
) -> list[Check]:
    assert plan.gateway is not None
    ep = gateway_endpoint(plan)
    version = plan.stack.defaults.version
    out = [run_check("gateway", "models", lambda: _lists_every_model(plan, ep))]
    if ep.api_key:
        out.append(run_check("gateway", "wrong key refused", lambda: _wrong_key(ep)))
    groups = replicas.groups(plan.services)
    chosen = services or list(groups)
    for name in chosen:
        s = plan.service(name)  # a clear error for an unknown name; a replica group's first
        label = f"{s.replica_of or s.name} via gateway"
        t = Target(ep, s, max_tokens, version, wire.reasoning_fields(version))
        for check, fn in checks_for(s):
            if check not in _SERVER_CHECKS:
                out.append(run_check(label, check, lambda fn=fn, t=t: fn(t)))
        for route in plan.gateway.routes:
            if route.lora and route.service == (s.replica_of or s.name):
                # an adapter is the service's model under another name: same checks
                adapter = replace(s, served_name=route.model, reasoning_field=None)
                ta = Target(ep, adapter, max_tokens, version, wire.reasoning_fields(version))
                for check, fn in checks_for(s):
                    if check in ("chat", "models"):
                        lora = f"{route.model} (LoRA) via gateway"
                        out.append(run_check(lora, check, lambda fn=fn, ta=ta: fn(ta)))
    return out


def _lists_every_model(plan: Plan, ep: Endpoint) -> str:
    assert plan.gateway is not None
    code, ids = ep.served_models(timeout=10)
    if code != 200:
        raise Failed(f"/v1/models answered HTTP {code}")
    missing = [m for m in plan.gateway.models() if m not in ids]
    if missing:
        raise Failed(f"does not list {', '.join(missing)} (lists {ids})")
    return f"lists all {len(plan.gateway.models())}: {', '.join(plan.gateway.models())}"


def _wrong_key(ep: Endpoint) -> str:
    wrong = Endpoint(ep.host, ep.port, "kit-smoke-wrong-key")
    r = wrong.get(wire.MODELS, timeout=10)
    if 200 <= r.status < 300:
        raise Failed(f"a wrong API key got HTTP {r.status}: the gateway does not check keys")
    return f"HTTP {r.status}"
