"""Reaching the parts of a stack with a gateway: engines without a host port (probed from
inside their own container), the gateway's and Prometheus' published ports, and the wait for
those two after the engines are ready.

An engine behind the gateway publishes no port; the kit never sends traffic to container
addresses from the host. Its readiness probe runs ``python3`` inside the engine's container
(``docker exec``) against ``127.0.0.1:8000``, at most once per :data:`EXEC_INTERVAL_S` per
path; clients reach it through the gateway.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kit import wire
from kit.client import Endpoint, PortClosed, Response, endpoint_for, port_is_open, read_api_key
from kit.errors import EngineError, KitError, NotReadyError
from kit.gateway_plan import GATEWAY_SERVICE, PROMETHEUS_SERVICE

if TYPE_CHECKING:
    from kit.engine import Engine
    from kit.readiness import Probe
    from kit.service_plan import ServicePlan
    from kit.stack_plan import Plan

EXEC_INTERVAL_S = 2.0
GRAFANA_SERVICE = "grafana"
ENGINE_PORT = 8000
#: the probe run inside an engine's container: prints "kit-probe <status> <body>", or "closed"
_PROBE = (
    "import sys, urllib.request, urllib.error\n"
    "req = urllib.request.Request('http://127.0.0.1:%d' + sys.argv[1])\n"
    "key = sys.argv[2] if len(sys.argv) > 2 else ''\n"
    "if key: req.add_header('Authorization', 'Bearer ' + key)\n"
    "try:\n"
    "    r = urllib.request.urlopen(req, timeout=%g)\n"
    "    code, body = r.status, r.read()\n"
    "except urllib.error.HTTPError as e:\n"
    "    code, body = e.code, e.read()\n"
    "except Exception:\n"
    "    print('closed'); sys.exit(0)\n"
    "sys.stdout.write('kit-probe %%d ' %% code + body.decode('utf-8', 'replace'))\n"
)

Exec = Callable[[str, list[str]], str]


def docker_exec(project: Engine) -> Exec:
    """Run a command in the project's container of a service; its stdout. The container id
    is looked up once (a compose ps) and reused until an exec fails."""
    ids: dict[str, str] = {}

    def run(service: str, argv: list[str]) -> str:
        from python_on_whales.exceptions import DockerException

        try:  # a container can vanish between listing and exec (removed, recreated)
            if service not in ids:
                st = project.states().get(service)
                if st is None or st.status != "running":
                    raise PortClosed(f"{service}: container not running")
                ids[service] = st.id
            if hasattr(project, "execute"):  # a stack over several hosts: the container's host
                return str(project.execute(ids[service], argv))
            return str(project.client.container.execute(ids[service], argv))  # type: ignore[attr-defined]
        except (DockerException, EngineError) as exc:
            ids.pop(service, None)
            raise PortClosed(f"{service}: exec failed: {exc}") from None

    return run


@dataclass
class ExecProbe:
    """A :class:`kit.readiness.Probe` for an engine without a host port."""

    service: str
    run: Exec
    api_key: str | None = None
    interval: float = EXEC_INTERVAL_S
    timeout: float = 4.0

    def __post_init__(self) -> None:
        self._cache: dict[str, tuple[float, Response | Exception]] = {}
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        return self.service

    @property
    def port(self) -> int:
        return ENGINE_PORT

    @property
    def base_url(self) -> str:
        return f"http://{self.service}:{ENGINE_PORT} (stack network)"

    def get(self, path: str, *, timeout: float = 30.0) -> Response:
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and time.monotonic() - cached[0] < self.interval:
                result = cached[1]
            else:
                result = self._fetch(path)
                self._cache[path] = (time.monotonic(), result)
        if isinstance(result, Exception):
            raise result
        return result

    def _fetch(self, path: str) -> Response | Exception:
        argv = ["python3", "-c", _PROBE % (ENGINE_PORT, self.timeout), path]
        if self.api_key:
            argv.append(self.api_key)
        t0 = time.perf_counter()
        try:
            out = self.run(self.service, argv)
        except PortClosed as exc:
            return exc
        parts = out.split(" ", 2)
        if len(parts) < 2 or parts[0] != "kit-probe" or not parts[1].isdigit():
            return PortClosed(f"{self.service}: nothing listens on port {ENGINE_PORT} yet")
        status, body = int(parts[1]), parts[2] if len(parts) > 2 else ""
        return Response(status, body.encode(), time.perf_counter() - t0)

    def served_models(self, *, timeout: float) -> tuple[int, list[str]]:
        r = self.get(wire.MODELS, timeout=timeout)
        if r.status != 200:
            return r.status, []
        try:
            data = json.loads(r.body).get("data", [])
            return r.status, [m.get("id") for m in data if isinstance(m, dict)]
        except (ValueError, AttributeError):
            return r.status, []


class StackEndpoints:
    """:class:`kit.readiness.Endpoints` for a stack whose engines may publish no port."""

    def __init__(self, project: Engine, run: Exec | None = None) -> None:
        self.project = project
        self._run = run
        self._probes: dict[str, ExecProbe] = {}

    def endpoint(self, plan: Plan, service: ServicePlan) -> Probe:
        if service.published:
            return endpoint_for(plan, service)
        if service.name not in self._probes:
            run = self._run or docker_exec(self.project)
            key = read_api_key(plan.stack.api_key_file())
            self._probes[service.name] = ExecProbe(service.name, run, key)
        return self._probes[service.name]

    def port_is_open(self, host: str, port: int) -> bool:
        return port_is_open(host, port)


def _local(bind: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind, bind)


def gateway_endpoint(plan: Plan) -> Endpoint:
    """Where the kit and clients reach the stack's gateway (with the stack's API key)."""
    g = plan.gateway
    if g is None:
        raise KitError(
            f"stack '{plan.stack.name}' has no gateway",
            hint="add a gateway: section (port: ...) to the stack file and run `kit up`",
        )
    from kit.gateway_hosts import gateway_address  # a stack over hosts: maybe a remote host

    host = gateway_address(plan.stack, g) or _local(g.bind_address)
    return Endpoint(host, g.port, read_api_key(plan.stack.api_key_file()))


def prometheus_endpoint(plan: Plan) -> Endpoint:
    o = plan.observability
    if o is None:
        raise KitError(
            f"stack '{plan.stack.name}' has no Prometheus",
            hint="add observability: true to the stack file and run `kit up`",
        )
    return Endpoint(_local(o.bind_address), o.port)


def aux_services(plan: Plan) -> list[str]:
    out = []
    if plan.gateway is not None:
        out.append(plan.gateway.name)
    if plan.observability is not None:
        out.append(plan.observability.name)
        if plan.observability.grafana_port is not None:
            out.append(GRAFANA_SERVICE)
    return out


def aux_ports_free(plan: Plan, project: Engine) -> None:
    """Refuse to start when the gateway's or Prometheus' port is held by something else."""
    ours = set(project.states())
    busy = []
    for name, ep in _aux_endpoints(plan):
        if name not in ours and port_is_open(ep.host, ep.port):
            busy.append(f"{name} ({ep.host}:{ep.port})")
    if busy:
        raise KitError(
            f"ports already in use by something else: {', '.join(busy)}",
            hint="stop what holds them (`ss -ltnp`), or change gateway.port / observability.port",
        )


def _aux_endpoints(plan: Plan) -> list[tuple[str, Endpoint]]:
    out = []
    if plan.gateway is not None:
        out.append((plan.gateway.name, gateway_endpoint(plan)))
    o = plan.observability
    if o is not None:
        out.append((o.name, prometheus_endpoint(plan)))
        if o.grafana_port is not None and o.grafana_bind_address is not None:
            out.append((GRAFANA_SERVICE, Endpoint(_local(o.grafana_bind_address), o.grafana_port)))
    return out


def aux_ready(plan: Plan, name: str, ep: Endpoint) -> str | None:
    """None when the auxiliary service ``name`` is ready, else what it is waiting for.

    The gateway is ready when ``/v1/models`` (with the key) lists every model of the stack and
    every LoRA adapter; Prometheus when it answers ``/-/ready``."""
    try:
        if name in (PROMETHEUS_SERVICE, GRAFANA_SERVICE):
            path = "/-/ready" if name == PROMETHEUS_SERVICE else "/api/health"
            r = ep.get(path, timeout=2)
            return None if r.status == 200 else f"{path} answered HTTP {r.status}"
        assert plan.gateway is not None and name == GATEWAY_SERVICE
        code, ids = ep.served_models(timeout=2)
    except (PortClosed, OSError):
        return "port closed"
    missing = [m for m in plan.gateway.models() if m not in ids]
    if code != 200:
        return f"/v1/models answered HTTP {code}"
    return f"does not list {', '.join(missing)}" if missing else None


def wait_aux(
    plan: Plan,
    project: Engine,
    *,
    timeout: float = 180.0,
    say: Callable[[str], None] = lambda _m: None,
    tick: float = 0.25,
) -> float:
    """Wait until the gateway and Prometheus are ready (they were started with the engines).
    Raises :class:`NotReadyError` with the container's last log lines when one exits or does
    not get ready in ``timeout`` seconds. Returns the seconds waited."""
    t0 = time.monotonic()
    pending = dict(_aux_endpoints(plan))
    last: dict[str, str] = {}
    while pending:
        states = project.states()
        for name, ep in list(pending.items()):
            st = states.get(name)
            if st is not None and (st.stopped or st.status == "restarting"):
                _fail(project, name, f"container {st.status} (exit {st.exit_code})", st.id)
            why = aux_ready(plan, name, ep) if st is not None else "not created"
            if why is None:
                say(f"{name}: ready at {ep.base_url}")
                del pending[name]
            elif last.get(name) != why:
                say(f"{name}: {why}")
                last[name] = why
        if not pending:
            break
        if time.monotonic() - t0 > timeout:
            name = next(iter(pending))
            st = states.get(name)
            _fail(project, name, f"not ready after {timeout:.0f}s ({last.get(name)})",
                  st.id if st else None)  # fmt: skip
        time.sleep(tick)
    return time.monotonic() - t0


def _fail(project: Engine, name: str, why: str, container: str | None) -> None:
    from kit.diagnose import failure_report

    log = project.container_logs(container, tail=30) if container else ""
    timed_out = why.startswith("not ready")
    text, diag = failure_report(f"service '{name}'", why, log, tail=30, timed_out=timed_out)
    err = NotReadyError(text)
    err.service = name  # type: ignore[attr-defined]
    err.cause = diag.cause.key if diag.cause else None  # type: ignore[attr-defined]
    raise err


VIA = ("gateway",)


def target_endpoint(plan: Plan, service: ServicePlan, via: str | None) -> Endpoint:
    """Where requests for ``service`` go: its own published port, or the gateway with
    ``via="gateway"`` (the request's model picks the service there)."""
    if via == "gateway":
        return gateway_endpoint(plan)
    if via is not None:
        raise KitError(f"--via {via!r}: the only target is 'gateway'")
    if not service.published:
        name = service.replica_of or service.name
        raise KitError(
            f"service '{name}' publishes no port: it is reached through the stack's gateway",
            hint="add --via gateway",
        )
    return endpoint_for(plan, service)


def aux_status(plan: Plan, states: dict) -> list[tuple[str, str, str, str]]:  # type: ignore[type-arg]
    """``(name, kind, url, models)`` of the gateway and Prometheus for ``kit status``."""
    out = []
    for name, ep in _aux_endpoints(plan):
        st = states.get(name)
        served = "-"
        if st is not None and st.status == "running":
            why = aux_ready(plan, name, ep)
            if name == GATEWAY_SERVICE:
                assert plan.gateway is not None
                served = f"lists all {len(plan.gateway.models())}" if why is None else why
            else:
                served = "ready" if why is None else why
        out.append((name, name if name == GATEWAY_SERVICE else "metrics", ep.base_url, served))
    return out
