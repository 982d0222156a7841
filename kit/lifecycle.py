"""Bring a planned stack up, look at it, take it down.

``up`` records what it deployed (:mod:`kit.record`) in the project folder: ``starting`` before
the first container, ``ready`` when every service is. A failed ``up`` removes what it started
and the record with it; with ``keep_on_failure`` both stay (state ``failed``), so ``kit logs``
and ``kit down`` still find what runs. ``down`` removes the record once the containers are gone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kit import hub_cache, record
from kit.client import PortClosed
from kit.engine import ContainerState, Engine
from kit.errors import EngineError, KitError
from kit.readiness import Clock, Endpoints, HttpEndpoints, Listener, Waiter, WaitResult
from kit.service_plan import gpu_ids
from kit.stack_plan import Plan


def preflight(plan: Plan, project: Engine, endpoints: Endpoints | None = None) -> None:
    """Refuse to start anything that would fail for a reason known in advance."""
    why = project.available()
    if why:
        raise EngineError(
            why, hint="start it (scripts/docker-up.sh here) or fix its endpoint, then `kit doctor`"
        )
    key_file = plan.stack.api_key_file()
    if key_file is not None and not key_file.is_file():
        raise KitError(
            f"the stack's env file {key_file} does not exist",
            hint="create it with a line VLLM_API_KEY=<secret> (chmod 600), or remove "
            "defaults.api_key_env_file",
        )
    from kit.hosts import local_model_paths  # (a remote host's folders are checked there)

    missing = [
        f"{s.name}: {s.model_host_path}"
        for s in plan.services
        if s.model_host_path is not None
        and local_model_paths(plan, s)
        and not Path(s.model_host_path).is_dir()
    ]
    here = [s for s in plan.services if local_model_paths(plan, s)]
    missing += hub_cache.missing_offline(plan.stack, here)  # these run with HF_HUB_OFFLINE=1
    if missing:
        raise KitError(
            "model folders missing on this host: " + "; ".join(missing),
            hint="`kit pull STACK` (or `kit up STACK --pull`) fetches folders whose service names "
            "a pull: source; download the others there, or fix defaults.model_root / model "
            "(`kit doctor`)",
        )
    net = endpoints or HttpEndpoints()
    ours = set(project.states())
    busy = []
    for s in plan.services:
        ep = net.endpoint(plan, s)
        if s.published and s.name not in ours and net.port_is_open(ep.host, ep.port):
            busy.append(f"{s.name} ({plan.stack.defaults.bind_address}:{s.port})")
    if busy:
        raise KitError(
            f"ports already in use by something else: {', '.join(busy)}",
            hint="stop what holds them (`ss -ltnp`), or change the services' port fields",
        )


def up(
    plan: Plan,
    project: Engine,
    *,
    timeout: float | None = None,
    keep_on_failure: bool = False,
    listener: Listener | None = None,
    endpoints: Endpoints | None = None,
    clock: Clock | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> WaitResult:
    """Start every service in plan order and wait until all are ready.

    On any failure (a crash, a timeout, Ctrl-C) everything is removed again unless
    ``keep_on_failure``; the error says what happened and why.
    """
    from kit import gateway_probe

    endpoints = endpoints or gateway_probe.StackEndpoints(project)
    preflight(plan, project, endpoints)
    aux = gateway_probe.aux_services(plan)  # the gateway and Prometheus: no GPU, start at once
    if aux:
        gateway_probe.aux_ports_free(plan, project)
    project.write()
    started_at = record.utc_now()
    image = project.options.image

    def write_record(state: str, detail: str = "") -> None:
        record.write(
            project.folder,
            plan,
            image_override=image,
            state=state,
            detail=detail,
            started_at=started_at,
        )

    write_record("starting")
    try:
        if aux:
            project.start(aux)
        result = Waiter(  # the gateway and Prometheus are watched from the start: a crash fails
            project,  # at once, not after every engine has loaded
            timeout=timeout,
            listener=listener,
            endpoints=endpoints,
            clock=clock,
            watch=aux,
        ).run()
        if aux:
            gateway_probe.wait_aux(plan, project, say=say)
    except BaseException as exc:
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc).split("\n")[0]
        if keep_on_failure:
            write_record("failed", why)
            note = f"kept for debugging: `kit logs {plan.stack.name}`, then `kit down {plan.stack.name}`"
        else:
            try:
                project.down()
                record.remove(project.folder)
                note = "removed what was started (use --keep-on-failure to keep it)"
            except EngineError as down_exc:
                write_record("failed", why)
                note = f"could not remove it: {down_exc}"
        if isinstance(exc, KitError):
            exc.message += f"\n  {note}"
        elif isinstance(exc, KeyboardInterrupt):
            raise KitError(f"interrupted: {note}") from None
        raise
    write_record("ready")
    return result


def down(project: Engine, *, volumes: bool = False) -> None:
    """Remove the project's containers and network, then its deployment record. Succeeds
    when nothing runs."""
    why = project.available()
    if why:
        raise EngineError(why)
    project.write()  # works even when the stack was never up, or its folder is gone
    project.down(volumes=volumes)
    record.remove(project.folder)


def down_stack(ref: str, *, volumes: bool = False, warn=print) -> str:  # type: ignore[no-untyped-def]
    """Take down what runs for the stack ``ref`` (a name or a stack file path): the project its
    deployment record names, else the one its stack file plans (no record: not up, or started
    by an older kit). Returns the project name. ``warn`` is told about an unusable record."""
    from kit.engine import down_by_name
    from kit.hosts import make_engine
    from kit.render import RenderOptions

    try:
        dep = record.find(ref)
    except record.RecordError as exc:  # unusable record: take its project down by name
        warn(f"warning: {exc.message}")
        down_by_name(exc.project, volumes=volumes)
        record.remove(exc.path.parent)
        return exc.project
    if dep is None:
        from kit.plan import build_plan
        from kit.spec import load_stack

        plan, image = build_plan(load_stack(ref)), None
    else:
        plan, image = dep.plan, dep.image_override
    down(make_engine(plan, RenderOptions(image=image)), volumes=volumes)
    return plan.stack.name


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    kind: str
    gpus: str
    container: str
    health: str
    visible_devices: str
    url: str
    served: str
    #: a stack over several hosts: where it runs (kit.hosts)
    host: str = ""


def status(
    plan: Plan, project: Engine, *, endpoints: Endpoints | None = None
) -> list[ServiceStatus]:
    from kit import gateway_probe

    net = endpoints or gateway_probe.StackEndpoints(project)
    states = project.states()
    out = []
    for s in plan.services:
        # a model over several hosts: its head's row (its service state is a failed part's)
        st = states.get(f"{s.name}/head") or states.get(s.name)
        ep = net.endpoint(plan, s)
        served = "-"
        if st is not None and st.status == "running":
            try:
                code, ids = ep.served_models(timeout=2)
                served = "listed" if s.served_name in ids else f"HTTP {code}, not listed"
            except (PortClosed, OSError):
                served = "port closed"
        container = _container(st)
        out.append(
            ServiceStatus(
                name=s.name,
                kind=s.kind,
                gpus=gpu_ids(s.gpus),
                container=container,
                health=(st.health or "-") if st else "-",
                visible_devices=(
                    project.visible_devices(st.id) or "-" if st and st.status == "running" else "-"
                ),
                url=ep.base_url,
                served=served,
                host="+".join(p.host for p in s.nodes) if s.nodes else (s.host or ""),
            )
        )
        for part in s.nodes[1:]:  # the other hosts' parts of a model over several hosts
            wst = states.get(part.name)
            running = wst is not None and wst.status == "running"
            out.append(
                ServiceStatus(
                    name=f"{s.name} ({part.name})", kind=f"{s.recipe} worker",
                    gpus=gpu_ids(part.gpus), container=_container(wst),
                    health=(wst.health or "-") if wst else "-",
                    visible_devices=(project.visible_devices(wst.id) or "-") if running and wst else "-",
                    url="-", served="-", host=part.host,
                )
            )  # fmt: skip
    for name, kind, url, served in gateway_probe.aux_status(plan, states):  # gateway, Prometheus
        st = states.get(name)
        out.append(ServiceStatus(name=name, kind=kind, gpus="-", container=_container(st),
                                 health=(st.health or "-") if st else "-", visible_devices="-",
                                 url=url, served=served,
                                 host=(plan.gateway.host or "") if plan.gateway and name == plan.gateway.name else ""))  # fmt: skip
    return out


def _container(st: ContainerState | None) -> str:
    if st is None:
        return "not created"
    out = st.status
    if st.stopped and st.exit_code is not None:
        out += f" ({st.exit_code})"
    if st.restart_count:
        out += f", {st.restart_count} restarts"
    return out
