"""Bring a planned stack up, look at it, take it down."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kit.client import PortClosed, endpoint_for, port_is_open
from kit.engine import Project, engine_available
from kit.errors import EngineError, KitError
from kit.plan import Plan, gpu_ids
from kit.readiness import Listener, Waiter, WaitResult


def preflight(plan: Plan, project: Project) -> None:
    """Refuse to start anything that would fail for a reason known in advance."""
    why = engine_available()
    if why:
        raise EngineError(why, hint="start it (scripts/docker-up.sh here), then `kit doctor`")
    key_file = plan.stack.api_key_file()
    if key_file is not None and not key_file.is_file():
        raise KitError(
            f"the stack's env file {key_file} does not exist",
            hint="create it with a line VLLM_API_KEY=<secret> (chmod 600), or remove "
            "defaults.api_key_env_file",
        )
    missing = [
        f"{s.name}: {s.model_host_path}"
        for s in plan.services
        if s.model_host_path is not None and not Path(s.model_host_path).is_dir()
    ]
    if missing:
        raise KitError(
            "model folders missing on this host: " + "; ".join(missing),
            hint="download the models there, or fix defaults.model_root / model (`kit doctor`)",
        )
    ours = set(project.states())
    busy = []
    for s in plan.services:
        ep = endpoint_for(plan, s)
        if s.name not in ours and port_is_open(ep.host, s.port):
            busy.append(f"{s.name} ({plan.stack.defaults.bind_address}:{s.port})")
    if busy:
        raise KitError(
            f"ports already in use by something else: {', '.join(busy)}",
            hint="stop what holds them (`ss -ltnp`), or change the services' port fields",
        )


def up(
    plan: Plan,
    project: Project,
    *,
    timeout: float | None = None,
    keep_on_failure: bool = False,
    listener: Listener | None = None,
) -> WaitResult:
    """Start every service in plan order and wait until all are ready.

    On any failure (a crash, a timeout, Ctrl-C) everything is removed again unless
    ``keep_on_failure``; the error says what happened and why.
    """
    preflight(plan, project)
    project.write()
    try:
        return Waiter(project, timeout=timeout, listener=listener).run()
    except BaseException as exc:
        if keep_on_failure:
            note = f"kept for debugging: `kit logs {plan.stack.name}`, then `kit down {plan.stack.name}`"
        else:
            try:
                project.down()
                note = "removed what was started (use --keep-on-failure to keep it)"
            except EngineError as down_exc:
                note = f"could not remove it: {down_exc}"
        if isinstance(exc, KitError):
            exc.message += f"\n  {note}"
        elif isinstance(exc, KeyboardInterrupt):
            raise KitError(f"interrupted: {note}") from None
        raise


def down(project: Project, *, volumes: bool = False) -> None:
    why = engine_available()
    if why:
        raise EngineError(why)
    project.write()  # works even when the stack was never up, or its folder is gone
    project.down(volumes=volumes)


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


def status(plan: Plan, project: Project) -> list[ServiceStatus]:
    states = project.states()
    out = []
    for s in plan.services:
        st = states.get(s.name)
        ep = endpoint_for(plan, s)
        served = "-"
        if st is not None and st.status == "running":
            try:
                code, ids = ep.served_models(timeout=2)
                served = "listed" if s.served_name in ids else f"HTTP {code}, not listed"
            except (PortClosed, OSError):
                served = "port closed"
        container = "not created"
        if st is not None:
            container = st.status
            if st.stopped and st.exit_code is not None:
                container += f" ({st.exit_code})"
            if st.restart_count:
                container += f", {st.restart_count} restarts"
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
            )
        )
    return out
