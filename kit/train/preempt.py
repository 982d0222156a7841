"""GPU arbitration between a training job and the stack's running services.

What runs comes from the deployment record (:mod:`kit.record`) and the engine, never from the
stack file. A job whose GPUs running services use is refused, naming them, unless the user
says ``--preempt``: then those services are stopped for the job, and restored afterwards
(started again and waited for until ready), whether the job succeeded, failed, crashed or
was interrupted. vLLM's sleep mode (``--enable-sleep-mode``, ``POST /sleep``) is not used: it
needs the server's development mode; stopping frees the GPU on every version.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from kit.engine import Project
from kit.errors import KitError
from kit.readiness import Listener, Waiter
from kit.service_plan import ServicePlan, gpu_ids
from kit.stack_plan import Plan


class GpusBusy(KitError):
    """The job's GPUs are used by running services and --preempt was not given."""


@dataclass(frozen=True)
class Busy:
    service: ServicePlan
    gpus: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.service.name} (GPU {gpu_ids(self.gpus)})"


def busy_services(plan: Plan, project: Project, gpus: Sequence[int]) -> list[Busy]:
    """Running services of the deployed ``plan`` on any of ``gpus``."""
    states = project.states()
    out = []
    for s in plan.services:
        shared = tuple(g for g in s.gpus if g in gpus)
        st = states.get(s.name)
        if shared and st is not None and st.status in ("running", "restarting"):
            out.append(Busy(s, shared))
    return out


def refuse(job: str, gpus: Sequence[int], busy: list[Busy], stack: str) -> GpusBusy:
    return GpusBusy(
        f"job '{job}' needs GPU {gpu_ids(tuple(gpus))}, used by running services of "
        f"'{stack}': {', '.join(b.describe() for b in busy)}",
        hint=f"`kit train {stack} {job} --preempt` stops them for the job and restarts them "
        "after it (also when it fails or is interrupted); or give the job other gpus",
    )


def stop(project: Project, names: Sequence[str]) -> None:
    project._run("stop", lambda: project.client.compose.stop(services=list(names), timeout=30))


def restore(
    plan: Plan,
    project: Project,
    names: Sequence[str],
    *,
    timeout: float | None = None,
    listener: Listener | None = None,
) -> None:
    """Start ``names`` again (in plan order, GPU sharers one after another) and wait until
    every one is ready. ``project`` must have the compose file of ``plan`` written."""
    keep = set(names)
    services = tuple(
        dataclasses.replace(s, depends_on=tuple(d for d in s.depends_on if d in keep))
        for s in plan.services
        if s.name in keep
    )
    sub = Project(
        dataclasses.replace(plan, services=services), options=project.options,
        client=project.client,
    )  # fmt: skip
    Waiter(sub, timeout=timeout, listener=listener).run()
