"""TEST DOUBLE: an in-memory :class:`kit.engine.Engine` whose containers follow scripts over
fake time. Nothing runs and nothing talks to Docker or the network.

A :class:`FakeClock` is the only time there is: the readiness loop sleeps on it (a sleep moves
it forward at once), and each fake container's state and HTTP answers are a function of the
clock since that container was started, as its :class:`Script` says. So a 30-minute load runs
in milliseconds, and every run is the same.

    clock = FakeClock()
    engine = FakeEngine(plan, clock, {"llm": Script(port_closed_for=8), "embed": Script()},
                        folder=tmp_path)
    Waiter(engine, endpoints=engine.endpoints, clock=clock).run()
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kit.client import PortClosed, Response
from kit.engine import ContainerState
from kit.errors import EngineError
from kit.render import RenderOptions
from kit.service_plan import ServicePlan
from kit.stack_plan import Plan

NEVER = math.inf
#: seconds a crashed container spends in "restarting" before it runs again
RESTART_DELAY = 1.0


class FakeClock:
    """Fake monotonic time. ``interrupt_at``: the first sleep that reaches that time raises
    KeyboardInterrupt (Ctrl-C during the wait)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.start = start
        self.sleeps = 0
        self.interrupt_at: float | None = None

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.t += seconds
        if self.interrupt_at is not None and self.elapsed >= self.interrupt_at:
            self.interrupt_at = None
            raise KeyboardInterrupt

    @property
    def elapsed(self) -> float:
        return self.t - self.start


@dataclass(frozen=True)
class Script:
    """What one fake container does; times in seconds since it was started (created).

    Loading goes: ``created_for`` in state created, then running with the port closed for
    ``port_closed_for``, then ``/health`` answering 503 for ``unhealthy_for``, then 200 with
    ``/v1/models`` not listing the served name for ``unlisted_for``, then ready. Events:
    ``exit_after`` (the process ends with ``exit_code``; 0 is an exit too), ``restart_after``
    (it crashes and the engine restarts it: "restarting", then running and loading again
    with one more restart), ``disappear_after`` (someone removed the container).
    ``log``: ``(seconds, line)``; a line shows once its time has come.
    """

    created_for: float = 0.0
    port_closed_for: float = 1.0
    unhealthy_for: float = 0.0
    unlisted_for: float = 0.0
    exit_after: float | None = None
    exit_code: int = 1
    restart_after: float | None = None
    disappear_after: float | None = None
    log: tuple[tuple[float, str], ...] = ()

    @property
    def ready_after(self) -> float:
        return self.created_for + self.port_closed_for + self.unhealthy_for + self.unlisted_for


@dataclass(frozen=True)
class Moment:
    """A container at one instant."""

    status: str  # created | running | restarting | exited | gone
    http: str  # closed | 503 | unlisted | listed
    restarts: int
    exit_code: int | None


@dataclass
class FakeContainer:
    service: ServicePlan | None  # None: the gateway or Prometheus (no GPU, not an engine)
    id: str
    script: Script
    started: float  # clock time of creation

    def at(self, now: float) -> Moment:
        s, t = self.script, now - self.started
        if s.disappear_after is not None and t >= s.disappear_after:
            return Moment("gone", "closed", 0, None)
        restarts, base = 0, 0.0
        if s.restart_after is not None and t >= s.restart_after:
            if t < s.restart_after + RESTART_DELAY:
                return Moment("restarting", "closed", 1, None)
            restarts, base = 1, s.restart_after + RESTART_DELAY
        if s.exit_after is not None and t >= s.exit_after:
            return Moment("exited", "closed", restarts, s.exit_code)
        t -= base
        if t < s.created_for:
            return Moment("created", "closed", restarts, None)
        t -= s.created_for
        for span, http in (
            (s.port_closed_for, "closed"),
            (s.unhealthy_for, "503"),
            (s.unlisted_for, "unlisted"),
        ):
            if t < span:
                return Moment("running", http, restarts, None)
            t -= span
        return Moment("running", "listed", restarts, None)

    def log_lines(self, now: float) -> list[str]:
        return [line for at, line in self.script.log if now - self.started >= at]


@dataclass
class Call:
    at: float  # seconds since the clock's start
    action: str
    args: tuple[str, ...] = ()


class FakeEngine:
    """TEST DOUBLE of :class:`kit.engine.Engine` (see the module doc)."""

    def __init__(
        self,
        plan: Plan,
        clock: FakeClock,
        scripts: dict[str, Script] | None = None,
        *,
        folder: Path,
        options: RenderOptions | None = None,
        unavailable: str | None = None,
        taken_ports: Sequence[int] = (),
    ) -> None:
        self.plan = plan
        self.name = plan.stack.name
        self.options = options or RenderOptions()
        self.folder = folder
        self.clock = clock
        self.scripts = dict(scripts or {})
        self.unavailable = unavailable
        self.fail_down: str | None = None
        self.containers: dict[str, FakeContainer] = {}
        self.calls: list[Call] = []
        self.endpoints = FakeEndpoints(self, taken_ports)
        self._ids = 0

    # --- Engine ---------------------------------------------------------------------------

    def available(self) -> str | None:
        return self.unavailable

    def write(self) -> bool:
        self._call("write")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "fake-compose.json"
        text = json.dumps({"project": self.name, "services": [s.name for s in self.plan.services]})
        changed = not path.exists() or path.read_text() != text
        path.write_text(text)
        return changed

    def start(self, services: Sequence[str]) -> None:
        self._call("start", *services)
        for name in services:
            current = self.containers.get(name)
            if current is not None and current.at(self.clock.now()).status == "running":
                continue  # compose up leaves a running container alone
            self._ids += 1
            engines = {s.name for s in self.plan.services}
            self.containers[name] = FakeContainer(
                self.plan.service(name) if name in engines else None,
                f"{name}-{self._ids}",
                self.scripts.get(name, Script()),
                self.clock.now(),
            )

    def states(self) -> dict[str, ContainerState]:
        out = {}
        for name, c in self.containers.items():
            m = c.at(self.clock.now())
            if m.status == "gone":
                continue
            health = None
            if m.status == "running":
                health = "starting" if m.http in ("closed", "503") else "healthy"
            out[name] = ContainerState(name, c.id, m.status, m.exit_code, m.restarts, health)
        return out

    def logs(self, service: str | None = None, *, tail: int | None = 200) -> str:
        lines = []
        for name, c in self.containers.items():
            if service in (None, name):
                prefix = "" if service else f"{name}  | "
                lines += [prefix + line for line in c.log_lines(self.clock.now())]
        lines = lines[-tail:] if tail else lines
        return "".join(line + "\n" for line in lines)

    def follow_logs(
        self, service: str | None = None, *, tail: int | None = 200
    ) -> Iterator[tuple[str, bytes]]:
        for line in self.logs(service, tail=tail).splitlines(keepends=True):
            yield "stdout", line.encode()

    def container_logs(self, container_id: str, *, tail: int = 60) -> str:
        for c in self.containers.values():
            if c.id == container_id:
                lines = c.log_lines(self.clock.now())[-tail:]
                return "".join(line + "\n" for line in lines)
        return f"(logs unavailable: no container {container_id})"

    def visible_devices(self, container_id: str) -> str | None:
        for c in self.containers.values():
            running = c.at(self.clock.now()).status == "running"
            if c.id == container_id and running and c.service is not None:
                return ",".join(map(str, c.service.gpus))
        return None

    def down(self, *, volumes: bool = False) -> None:
        self._call("down", *(["volumes"] if volumes else []))
        if self.fail_down:
            raise EngineError(self.fail_down)
        self.containers.clear()

    def remove_folder(self) -> None:
        self._call("remove_folder")

    # --- for tests ------------------------------------------------------------------------

    def _call(self, action: str, *args: str) -> None:
        self.calls.append(Call(self.clock.elapsed, action, args))

    def started_at(self, service: str) -> float:
        """When ``service`` was first started (seconds since the clock's start)."""
        for call in self.calls:
            if call.action == "start" and service in call.args:
                return call.at
        raise AssertionError(f"{service} was never started")

    def actions(self) -> list[str]:
        return [c.action for c in self.calls]


class FakeEndpoints:
    """TEST DOUBLE of :class:`kit.readiness.Endpoints`: each service's answers come from its
    fake container at the clock's time; ``taken_ports`` are held by "something else"."""

    def __init__(self, engine: FakeEngine, taken_ports: Sequence[int] = ()) -> None:
        self.engine = engine
        self.taken_ports = set(taken_ports)
        self.probes: list[tuple[float, str, str]] = []  # (seconds, service, path)

    def endpoint(self, plan: Plan, service: ServicePlan) -> FakeEndpoint:
        return FakeEndpoint(self, service)

    def port_is_open(self, host: str, port: int) -> bool:
        return port in self.taken_ports


@dataclass
class FakeEndpoint:
    net: FakeEndpoints
    service: ServicePlan
    host: str = "127.0.0.1"

    @property
    def port(self) -> int:
        return self.service.port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _http(self, path: str) -> str:
        engine = self.net.engine
        self.net.probes.append((engine.clock.elapsed, self.service.name, path))
        c = engine.containers.get(self.service.name)
        m = c.at(engine.clock.now()) if c else None
        if m is None or m.status != "running" or m.http == "closed":
            raise PortClosed(f"{self.base_url}: connection refused")
        return m.http

    def get(self, path: str, *, timeout: float = 30.0) -> Response:
        http = self._http(path)
        if http == "503":
            return Response(503, b'{"error": "loading"}', 0.001)
        if path == "/v1/models":
            ids = [self.service.served_name] if http == "listed" else []
            body = {"object": "list", "data": [{"id": i, "object": "model"} for i in ids]}
            return Response(200, json.dumps(body).encode(), 0.001)
        return Response(200, b"", 0.001)

    def served_models(self, *, timeout: float) -> tuple[int, list[str]]:
        r = self.get("/v1/models", timeout=timeout)
        if r.status != 200:
            return r.status, []
        return r.status, [m["id"] for m in r.json()["data"]]
