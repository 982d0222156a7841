"""Watch a stack's models over several hosts while they serve; when any part of one is lost,
say why and take that service down on every host (``kit watch STACK``).

``kit up`` handles a part lost while the service loads (:mod:`kit.readiness` fails the whole
``up``). Once the stack is up nothing did: a multi-node part has ``restart: no`` (a part alone
cannot rejoin its cluster), so after a lost node the head exits or hangs and the other hosts
keep their containers, GPUs held, serving nothing. The watcher follows each host's engine
through the same per-host projects ``kit up`` used (:class:`~kit.hosts.HostsEngine`): every
``interval`` seconds one ``docker compose ps`` per host. A part is lost when its container
exited or died (OOM kill included), restarts, is gone, or its host's engine has not answered for
``grace`` seconds. Then, for that service only:

1. the root cause is picked: a missing part or unreachable host first, then an OOM-killed part,
   then the part that stopped first (Docker's ``FinishedAt``): the worker killed, not the head
   that exited because its peer was gone;
2. the diagnosis is the loading path's own (:func:`kit.diagnose.failure_report` over the
   part's log with its head's, :meth:`~kit.hosts.HostsEngine.container_logs`);
3. every part is removed on every host that answers (head first), the other services of the
   stack untouched;
4. the deployment record gets ``torn_down[service]`` (when, which host and container, why, the
   cause, hosts whose part could not be removed), so ``kit status`` says so.

Polling ``compose ps`` rather than following ``docker events`` streams: one code path through
the kit's clients for every engine kind (unix, ssh, tcp with TLS), and an engine that stops
answering shows up as an error of the next look rather than as a silently ended stream.

Everything outside is injected (:class:`HostsView`, the clock), so the decisions run on fakes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kit import record
from kit.diagnose import failure_report
from kit.engine import ContainerState
from kit.errors import EngineError
from kit.service_plan import ServicePlan
from kit.stack_plan import Plan

if TYPE_CHECKING:
    from kit.hosts import HostsEngine

#: seconds between two looks at every host
WATCH_INTERVAL_S = 2.0
#: seconds a host's engine may not answer before its parts count as lost
UNREACHABLE_GRACE_S = 30.0
#: log lines shown with a diagnosis (as when loading)
LOG_TAIL = 40


@dataclass(frozen=True)
class Part:
    """One host's part of a model over several hosts, as last seen."""

    service: str
    name: str
    host: str
    rank: int
    recipe: str
    state: ContainerState | None = None
    #: the host's engine does not answer: what it said
    unreachable: str | None = None
    oom_killed: bool = False
    #: when the container stopped (Docker's FinishedAt, ISO 8601), "" when it did not
    finished_at: str = ""
    #: the container's name, "" when unknown
    container: str = ""

    def describe(self) -> str:
        role = "head" if self.rank == 0 else "worker"
        return f"{self.recipe} {role} {self.name} on host '{self.host}'"

    def trouble(self) -> str | None:
        """What is wrong with this part (None: it runs)."""
        if self.unreachable is not None:
            return f"its host's engine does not answer ({self.unreachable})"
        st = self.state
        if st is None:
            return "its container is gone"
        if st.stopped:
            return f"exited ({exit_text(st.exit_code, oom_killed=self.oom_killed)})"
        if st.status == "restarting":
            return f"restarting ({st.restart_count} restarts): it crashed"
        return None


def exit_text(code: int | None, *, oom_killed: bool = False) -> str:
    out = f"exit status {code}" if code is not None else "no exit status"
    if code is not None and code > 128:
        out += f", killed by signal {code - 128}"
    if oom_killed:
        out += ", out of memory (the kernel's OOM killer)"
    return out


class HostsView(Protocol):
    """What the watcher needs from every host's engine (:class:`DockerHosts`: the real ones)."""

    def states(self, host: str) -> dict[str, ContainerState]:
        """The stack's containers on ``host`` by compose service; raises :class:`EngineError`."""
        ...

    def details(self, host: str, container_id: str) -> tuple[str, bool, str]:
        """A container's name, whether the OOM killer ended it, when it stopped (ISO 8601)."""
        ...

    def logs(self, part: Part) -> str:
        """The part's last log lines (a worker's with its head's); a note when unavailable."""
        ...

    def remove(self, host: str, names: Sequence[str]) -> None:
        """Stop and remove compose services ``names`` on ``host``; raises :class:`EngineError`."""
        ...


def multinode_services(plan: Plan) -> list[ServicePlan]:
    return [s for s in plan.services if s.nodes]


def look(
    plan: Plan, view: HostsView, services: Sequence[ServicePlan] | None = None
) -> dict[str, list[Part]]:
    """Every part of the multi-node ``services`` (default: all of ``plan``'s), by service."""
    services = multinode_services(plan) if services is None else services
    per_host: dict[str, dict[str, ContainerState] | str] = {}
    for s in services:
        for part in s.nodes:
            if part.host not in per_host:
                try:
                    per_host[part.host] = view.states(part.host)
                except EngineError as exc:
                    per_host[part.host] = exc.message
    out: dict[str, list[Part]] = {}
    for s in services:
        parts = []
        for node in sorted(s.nodes, key=lambda n: n.rank):
            seen = per_host[node.host]
            p = Part(s.name, node.name, node.host, node.rank, str(s.recipe))
            if isinstance(seen, str):
                p = dataclasses.replace(p, unreachable=seen)
            else:
                st = seen.get(node.name)
                p = dataclasses.replace(p, state=st)
                if st is not None and st.stopped:
                    try:
                        name, oom, finished = view.details(node.host, st.id)
                    except EngineError:
                        name, oom, finished = "", False, ""
                    p = dataclasses.replace(p, container=name, oom_killed=oom,
                                            finished_at=finished)  # fmt: skip
            parts.append(p)
        out[s.name] = parts
    return out


def lost_parts(
    parts: Sequence[Part], unreachable_for: Mapping[str, float], grace: float
) -> list[Part]:
    """The parts in trouble; a part on a host whose engine does not answer only once it has
    not answered for ``grace`` seconds (a blip of the network is not a lost node)."""
    out = []
    for p in parts:
        if p.trouble() is None:
            continue
        if p.unreachable is not None and unreachable_for.get(p.host, 0.0) < grace:
            continue
        out.append(p)
    return out


def root_cause(lost: Sequence[Part]) -> Part:
    """The part whose loss took the service down (see the module doc)."""

    def key(p: Part) -> tuple[int, int, str, int]:
        gone = p.unreachable is not None or p.state is None
        return (0 if gone else 1, 0 if p.oom_killed else 1, p.finished_at or "~", -p.rank)

    return min(lost, key=key)


@dataclass(frozen=True)
class Teardown:
    """What the watcher did about one service."""

    service: str
    root: Part
    #: every lost part, the root first
    lost: tuple[Part, ...]
    #: the diagnosis as printed (last log lines, cause, what to change)
    report: str
    cause: str | None
    cause_title: str | None
    at: str
    #: hosts whose part could not be removed, with why
    left: tuple[str, ...] = ()

    @property
    def why(self) -> str:
        return f"{self.root.describe()} {self.root.trouble()}"

    def to_record(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "host": self.root.host,
            "part": self.root.name,
            "container": self.root.container,
            "exit_code": self.root.state.exit_code if self.root.state else None,
            "why": self.why,
            "cause": self.cause,
            "cause_title": self.cause_title,
            "left": list(self.left),
        }


@dataclass
class Watcher:
    """One stack's multi-node services; :meth:`check` is one look (and what follows)."""

    plan: Plan
    view: HostsView
    grace: float = UNREACHABLE_GRACE_S
    now: Callable[[], float] = time.monotonic
    say: Callable[[str], None] = print
    #: services already torn down (by this watcher, or before: the record says so)
    done: set[str] = field(default_factory=set)
    _unreachable_since: dict[str, float] = field(default_factory=dict)

    @property
    def watching(self) -> list[ServicePlan]:
        return [s for s in multinode_services(self.plan) if s.name not in self.done]

    def check(self) -> list[Teardown]:
        """Look at every host once; tear down each service that lost a part."""
        services = self.watching
        if not services:
            return []
        parts = look(self.plan, self.view, services)
        t = self.now()
        down_hosts = {p.host for ps in parts.values() for p in ps if p.unreachable is not None}
        for h in down_hosts:
            self._unreachable_since.setdefault(h, t)
        for h in list(self._unreachable_since):
            if h not in down_hosts:
                del self._unreachable_since[h]
        since = {h: t - t0 for h, t0 in self._unreachable_since.items()}
        out = []
        for s in services:
            lost = lost_parts(parts[s.name], since, self.grace)
            if lost:
                out.append(self.tear_down(s, parts[s.name], lost))
        return out

    def tear_down(self, s: ServicePlan, parts: Sequence[Part], lost: Sequence[Part]) -> Teardown:
        root = root_cause(lost)
        others = [p for p in lost if p is not root]
        why = f"lost {root.describe()}: {root.trouble()} while serving"
        if others:
            why += "; then " + "; ".join(f"{p.describe()} {p.trouble()}" for p in others)
        head = parts[0]
        source = next((p for p in (root, head) if p.state is not None and p.unreachable is None),
                      None)  # fmt: skip
        log = self.view.logs(source) if source is not None else ""
        report, diag = failure_report(f"service '{s.name}'", why, log, tail=LOG_TAIL)
        self.say(report)
        left = []
        reachable = [p for p in parts if p.unreachable is None and p.state is not None]
        for host in dict.fromkeys(p.host for p in parts):  # the head's host first
            names = [p.name for p in reachable if p.host == host]
            if any(p.host == host and p.unreachable is not None for p in parts):
                left.append(f"host '{host}': its engine does not answer")
                continue
            if not names:
                continue
            try:
                self.view.remove(host, names)
            except EngineError as exc:
                left.append(f"host '{host}': {exc.message}")
        hosts = ", ".join(dict.fromkeys(p.host for p in parts))
        self.say(
            f"service '{s.name}': torn down on every host ({hosts})"
            if not left
            else f"service '{s.name}': torn down except on {'; '.join(left)}: `kit down "
            f"{self.plan.stack.name}` once it answers"
        )
        self.done.add(s.name)
        return Teardown(
            service=s.name,
            root=root,
            lost=(root, *others),
            report=report,
            cause=diag.cause.key if diag.cause else None,
            cause_title=diag.cause.title if diag.cause else None,
            at=record.utc_now(),
            left=tuple(left),
        )


# --- the real engines --------------------------------------------------------------------------


class DockerHosts:
    """:class:`HostsView` over a :class:`~kit.hosts.HostsEngine`: the per-host projects (and
    python-on-whales clients) ``kit up`` used."""

    def __init__(self, engine: HostsEngine) -> None:
        self.engine = engine

    def states(self, host: str) -> dict[str, ContainerState]:
        project = self.engine.projects[host]
        try:
            return dict(project.states())
        except EngineError as exc:
            raise EngineError(f"host '{host}': {exc.message}") from None

    def details(self, host: str, container_id: str) -> tuple[str, bool, str]:
        from python_on_whales.exceptions import DockerException

        try:
            c = self.engine.projects[host].client.container.inspect(container_id)
        except DockerException as exc:
            raise EngineError(f"host '{host}': inspect failed: {exc}") from None
        finished = c.state.finished_at
        stamp = finished.isoformat() if finished is not None else ""
        return str(c.name or "").lstrip("/"), bool(c.state.oom_killed), stamp

    def logs(self, part: Part) -> str:
        assert part.state is not None
        try:
            self.engine.states()  # the engine learns which container is which part
        except EngineError:
            project = self.engine.projects[part.host]
            return str(project.container_logs(part.state.id, tail=LOG_TAIL))
        return str(self.engine.container_logs(part.state.id, tail=LOG_TAIL))

    def remove(self, host: str, names: Sequence[str]) -> None:
        from python_on_whales.exceptions import DockerException

        if not names:
            return
        project = self.engine.projects[host]
        try:
            project.client.compose.rm(services=list(names), stop=True)
        except DockerException as exc:
            text = (exc.stderr or exc.stdout or str(exc)).strip()
            raise EngineError(f"compose rm failed: {text[-300:]}") from None  # (host: the caller)


# --- a stack, from its deployment record -------------------------------------------------------


def record_teardown(folder: Path, started_at: str, teardown: Teardown) -> bool:
    """Add ``teardown`` to the deployment record in ``folder`` if it is still the deployment
    the watcher follows (same ``started_at``); False when it is not."""
    dep = record.read(folder)
    if dep is None or dep.started_at != started_at:
        return False
    record.write(
        folder,
        dep.plan,
        image_override=dep.image_override,
        state=dep.state,
        detail=dep.detail,
        started_at=dep.started_at,
        torn_down={**dep.torn_down, teardown.service: teardown.to_record()},
    )
    return True


def watch_stack(
    ref: str,
    *,
    interval: float = WATCH_INTERVAL_S,
    timeout: float | None = None,
    once: bool = False,
    grace: float = UNREACHABLE_GRACE_S,
    say: Callable[[str], None] = print,
    view_for: Callable[[HostsEngine], HostsView] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], float] = time.monotonic,
) -> list[Teardown]:
    """Follow the stack ``ref`` (its deployment record) until every multi-node service of it
    is torn down, the stack is taken down, ``timeout`` seconds pass, or after one look
    (``once``). Returns what it tore down."""
    from kit.hosts import HostsEngine, make_engine

    dep = record.deployed(ref)
    name = dep.name
    if not multinode_services(dep.plan):
        say(f"stack '{name}': no service runs over several hosts; nothing to watch")
        return []
    engine = make_engine(dep.plan, dep.render_options)
    assert isinstance(engine, HostsEngine)  # a model over several hosts: a stack with hosts:
    view = (view_for or DockerHosts)(engine)
    watcher = Watcher(dep.plan, view, grace=grace, now=now, say=say, done=set(dep.torn_down))
    if watcher.watching:
        names = ", ".join(s.name for s in watcher.watching)
        say(f"stack '{name}': watching {names} on every host (every {interval:g}s)")
    t0 = now()
    done: list[Teardown] = []
    told_state = False
    while watcher.watching:
        current = record.read(dep.folder)
        if current is None or current.started_at != dep.started_at:
            say(f"stack '{name}' was taken down or started again: stopped watching")
            break
        if current.state == "ready":
            for td in watcher.check():
                record_teardown(dep.folder, dep.started_at, td)
                done.append(td)
        elif not told_state:
            say(f"stack '{name}': deployment state {current.state}; `kit up` handles a node lost "
                "while loading, the watch begins once the stack is ready")  # fmt: skip
            told_state = True
        if once or (timeout is not None and now() - t0 >= timeout):
            break
        sleep(interval)
    return done


def status_notes(name: str, plan: Plan, torn_down: Mapping[str, Mapping[str, Any]],
                 view: HostsView) -> list[str]:  # fmt: skip
    """What ``kit status`` adds for multi-node services: torn down by the watcher (when, why),
    or a part lost and what ``kit watch``/``kit down`` will do about it."""
    out = []
    for svc, td in torn_down.items():
        line = (
            f"{svc}: torn down on every host by `kit watch` at {td.get('at')} after {td.get('why')}"
        )
        if td.get("cause_title"):
            line += f" (diagnosis: {td['cause_title']})"
        if td.get("left"):
            line += f"; not removed: {'; '.join(td['left'])}"
        out.append(
            line + f". `kit up {name}` serves it again (the other services stay as they are)"
        )
    watching = [s for s in multinode_services(plan) if s.name not in torn_down]
    if not watching:
        return out
    parts = look(plan, view, watching)
    for s in watching:
        lost = lost_parts(parts[s.name], {}, 0.0)
        if not lost:
            continue
        root = root_cause(lost)
        out.append(
            f"{s.name}: lost {root.describe()} ({root.trouble()}); the service cannot serve "
            f"without it. `kit watch {name}` diagnoses it and removes it on every host (the "
            f"other services stay); `kit down {name}` removes the whole stack"
        )
    return out
