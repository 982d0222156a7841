"""Start a stack in plan order and wait until every service is really ready.

Ready means: the container is running, ``GET /health`` answers 200, and ``GET /v1/models``
lists the served name. The kit starts each service itself once the services it shares a GPU
with are ready (so no compose call blocks for minutes), watches every container while it
waits, and stops at once when one exits or restarts: vLLM can exit 0 when its engine dies,
so any exit counts.

Everything outside the process is injected: the engine (:class:`~kit.engine.Engine`), the HTTP
side (:class:`Endpoints`: how a service is probed) and time (:class:`Clock`: what time it is
and how to wait a tick), so the loop runs on fakes in milliseconds.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from tenacity import Retrying, retry_if_result, stop_never, wait_fixed

from kit.client import PortClosed, Response, endpoint_for, port_is_open
from kit.diagnose import failure_report
from kit.engine import ContainerState, Engine
from kit.errors import NotReadyError
from kit.service_plan import ServicePlan
from kit.stack_plan import Plan

TICK_S = 0.25
PROBE_TIMEOUT_S = 2.0
LOG_TAIL = 40


class Probe(Protocol):
    """One service's HTTP endpoint as the readiness loop and ``kit status`` probe it
    (:class:`kit.client.Endpoint` is one). Both calls raise :class:`~kit.client.PortClosed`
    while nothing listens, or ``OSError`` (timeouts)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def base_url(self) -> str: ...

    def get(self, path: str, *, timeout: float = 30.0) -> Response: ...

    def served_models(self, *, timeout: float) -> tuple[int, list[str]]: ...


class Endpoints(Protocol):
    """How the kit reaches services over the network."""

    def endpoint(self, plan: Plan, service: ServicePlan) -> Probe: ...

    def port_is_open(self, host: str, port: int) -> bool:
        """Something listens on ``host:port`` (a port taken before the kit starts anything)."""
        ...


class HttpEndpoints:
    """The real network: :func:`kit.client.endpoint_for` and a TCP connect."""

    def endpoint(self, plan: Plan, service: ServicePlan) -> Probe:
        return endpoint_for(plan, service)

    def port_is_open(self, host: str, port: int) -> bool:
        return port_is_open(host, port)


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Phase(enum.StrEnum):
    WAITING = "waiting for GPU sharers"
    CREATED = "created"
    STARTING = "starting"
    #: a service over several hosts (kit.multinode): not every node/rank has joined yet
    CLUSTER = "cluster: waiting for every node"
    LOADING = "loading: port closed"
    UNHEALTHY = "loading: /health not 200"
    HEALTHY = "healthy: model not listed"
    READY = "ready"
    FAILED = "failed"


@dataclass
class ServiceProgress:
    """Times are seconds since the wait began."""

    service: ServicePlan
    phase: Phase = Phase.WAITING
    phase_since: float = 0.0
    started_at: float | None = None
    ready_at: float | None = None
    container_id: str | None = None
    restarts: int | None = None
    detail: str = ""

    @property
    def name(self) -> str:
        return self.service.name


@dataclass
class WaitResult:
    elapsed: float
    services: list[ServiceProgress] = field(default_factory=list)


Listener = Callable[[float, list[ServiceProgress], ServiceProgress | None], None]


class Waiter:
    """Runs the start/wait loop. ``listener(elapsed, all, changed)`` is told about every
    phase change (``changed``) and every tick (``changed=None``) for live displays.

    ``endpoints`` (default: the real network) and ``clock`` (default: the system's, ticks of
    ``tick`` seconds) are injectable; a tick probes the services in parallel threads.

    ``watch``: containers started beside the engines (the gateway, Prometheus) that must stay
    up while the engines load: one that exits or restarts fails the wait at once, like an
    engine (their own readiness is waited for afterwards, :func:`kit.gateway_probe.wait_aux`).
    """

    def __init__(
        self,
        project: Engine,
        *,
        timeout: float | None = None,
        listener: Listener | None = None,
        endpoints: Endpoints | None = None,
        clock: Clock | None = None,
        tick: float = TICK_S,
        watch: Sequence[str] = (),
    ) -> None:
        self.project = project
        self.watched: dict[str, ContainerState | None] = dict.fromkeys(watch)
        self.plan: Plan = project.plan
        self.timeout = timeout
        self.listener = listener or (lambda *_: None)
        self.clock = clock or SystemClock()
        self.tick_s = tick
        self.t0 = self.clock.now()
        self.progress = {s.name: ServiceProgress(s) for s in self.plan.services}
        net = endpoints or HttpEndpoints()
        self.endpoints: dict[str, Probe] = {
            s.name: net.endpoint(self.plan, s) for s in self.plan.services
        }
        self._pool = ThreadPoolExecutor(max_workers=max(2, len(self.plan.services)))

    # --- loop -----------------------------------------------------------------------------

    def run(self) -> WaitResult:
        """Tick until every service is ready; a failure raises :class:`NotReadyError`."""
        retrying = Retrying(
            sleep=self.clock.sleep,
            wait=wait_fixed(self.tick_s),
            retry=retry_if_result(lambda done: not done),
            stop=stop_never,  # every service has its own deadline, checked in tick()
            reraise=True,
        )
        try:
            retrying(self.tick)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
        return WaitResult(self._elapsed(), list(self.progress.values()))

    def tick(self) -> bool:
        """One round: start what may start, look at containers, probe endpoints."""
        to_start = [
            p.service.name
            for p in self.progress.values()
            if p.started_at is None
            and all(self.progress[d].phase is Phase.READY for d in p.service.depends_on)
        ]
        if to_start:
            self.project.start(to_start)
            for name in to_start:
                p = self.progress[name]
                p.started_at = self._elapsed()
                self._set(p, Phase.CREATED)
        states = self.project.states()
        for name in self.watched:
            self._check_watched(name, states.get(name))
        active = [p for p in self.progress.values() if p.started_at is not None]
        for p in active:
            self._check_container(p, states.get(p.name))
        probing = [
            p for p in active if p.phase not in (Phase.CREATED,) and p.phase is not Phase.READY
        ]
        results = list(self._pool.map(self._probe, probing))
        for p, phase in zip(probing, results, strict=True):
            if phase is Phase.READY:
                p.ready_at = self._elapsed()
            self._set(p, phase)
        for p in active:
            self._check_deadline(p, self._elapsed())
        self.listener(self._elapsed(), list(self.progress.values()), None)
        return all(p.phase is Phase.READY for p in self.progress.values())

    # --- pieces ---------------------------------------------------------------------------

    def _elapsed(self) -> float:
        return self.clock.now() - self.t0

    def _set(self, p: ServiceProgress, phase: Phase, detail: str = "") -> None:
        if phase is not p.phase:
            p.phase, p.phase_since, p.detail = phase, self._elapsed(), detail
            self.listener(self._elapsed(), list(self.progress.values()), p)

    def _check_container(self, p: ServiceProgress, st: ContainerState | None) -> None:
        if st is None:
            if p.container_id is not None:
                self._fail(p, "its container disappeared (removed by someone else?)", None)
            return
        if p.container_id is None or p.container_id != st.id:
            p.container_id, p.restarts = st.id, st.restart_count
        if st.stopped:
            code = f"exit status {st.exit_code}" if st.exit_code is not None else st.status
            when = "after it was ready" if p.phase is Phase.READY else "while loading"
            self._fail(p, f"{st.part or 'container'} exited ({code}) {when}", st)
        if st.status == "restarting" or (p.restarts is not None and st.restart_count > p.restarts):
            what = st.part or "container"
            self._fail(p, f"{what} restarted ({st.restart_count} restarts): it crashed", st)
        if st.status == "created" and p.phase is Phase.CREATED:
            return
        if st.status == "running" and p.phase is Phase.CREATED:
            self._set(p, Phase.STARTING)

    def _check_watched(self, name: str, st: ContainerState | None) -> None:
        first = self.watched[name]
        if st is None:
            if first is not None:
                self._fail_watched(name, "its container disappeared (removed by someone else?)")
            return
        if first is None or first.id != st.id:
            self.watched[name] = first = st
        code = f"exit status {st.exit_code}" if st.exit_code is not None else st.status
        what = st.part or "container"
        if st.stopped:
            self._fail_watched(name, f"{what} exited ({code}) while the engines loaded", st)
        if st.status == "restarting" or st.restart_count > first.restart_count:
            self._fail_watched(
                name, f"{what} restarted ({st.restart_count} restarts): it crashed", st
            )

    def _fail_watched(self, name: str, why: str, st: ContainerState | None = None) -> None:
        log = self.project.container_logs(st.id, tail=LOG_TAIL) if st else ""
        text, diag = failure_report(f"service '{name}'", why, log, tail=LOG_TAIL)
        err = NotReadyError(text)
        err.service = name  # type: ignore[attr-defined]
        err.cause = diag.cause.key if diag.cause else None  # type: ignore[attr-defined]
        raise err

    def _probe(self, p: ServiceProgress) -> Phase:
        if p.service.nodes:  # over several hosts: first every node joins (kit.hosts engine)
            waiting = getattr(self.project, "cluster_waiting", None)
            if waiting is not None and waiting(p.service) is not None:
                return Phase.CLUSTER
        ep = self.endpoints[p.name]
        try:
            health = ep.get("/health", timeout=PROBE_TIMEOUT_S)
        except PortClosed:
            return Phase.LOADING
        except OSError:
            return Phase.LOADING  # timeouts while the server is busy starting
        if health.status != 200:
            return Phase.UNHEALTHY
        try:
            _, ids = ep.served_models(timeout=PROBE_TIMEOUT_S)
        except (OSError, PortClosed):
            return Phase.HEALTHY
        return Phase.READY if p.service.served_name in ids else Phase.HEALTHY

    def _check_deadline(self, p: ServiceProgress, now: float) -> None:
        if p.phase is Phase.READY or p.started_at is None:
            return
        budget = self.timeout if self.timeout is not None else p.service.startup_timeout
        if now - p.started_at > budget:
            self._fail(
                p,
                f"not ready after {budget:.0f}s (phase: {p.phase.value}); raise the service's "
                "startup_timeout in the stack or pass --timeout",
                None,
                timed_out=True,
            )

    def _fail(
        self, p: ServiceProgress, why: str, st: ContainerState | None, *, timed_out: bool = False
    ) -> None:
        self._set(p, Phase.FAILED, why)
        log = self.project.container_logs(p.container_id, tail=LOG_TAIL) if p.container_id else ""
        text, diag = failure_report(
            f"service '{p.name}'", why, log, tail=LOG_TAIL, timed_out=timed_out
        )
        err = NotReadyError(text)
        err.service = p.name  # type: ignore[attr-defined]
        err.cause = diag.cause.key if diag.cause else None  # type: ignore[attr-defined]
        raise err
