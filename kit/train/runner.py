"""``kit train STACK JOB``: run one training job to the end, and serve its adapter.

1. Plan the stack (the job's validation: GPUs, data lines, base model and its modules,
   memory, TRL config keys); read what runs from the deployment record.
2. GPU arbitration (:mod:`kit.train.preempt`): refuse while running services use the job's
   GPUs, or with ``--preempt`` stop them; they are restored at the end in every case.
3. Distillation: collect the teacher's answers (:mod:`kit.train.distill`).
4. Render the TRL config into the run's results folder and the job's compose file into the
   project folder; start the one-shot container with ``trl sft|dpo --config``; follow its log
   for live progress; stop it at once on a NaN loss; diagnose a failure from the log.
5. Publish the adapter atomically under adapters_root (a temporary folder renamed into
   place), write the results folder, remove the container.
6. Serve it: load it into the running service named by ``serve`` at runtime
   (``POST /v1/load_lora_adapter``) where the service allows it, else restart the service with
   the adapter listed; the deployment record lists it either way.
"""

from __future__ import annotations

import dataclasses
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from kit import record
from kit.engine import Project, project_folder
from kit.errors import EngineError, KitError
from kit.plan import build_plan
from kit.record import Deployment
from kit.spec import load_stack
from kit.stack_plan import Plan
from kit.train import preempt, serving
from kit.train.config import OUTPUT_DIR, render_config
from kit.train.container import CONFIG_NAME, JobContainer, JobState, render_job_compose
from kit.train.diagnose import diagnose
from kit.train.jobplan import JobPlan
from kit.train.progress import LogParser, TrainProgress
from kit.train.results import content_hash, loss_plot, new_run_dir, write_history, write_json

LOG_TAIL = 30


class TrainFailed(KitError):
    """The job's container failed; the message has the last log lines and a diagnosis."""

    exit_code = 5


class TrainListener(Protocol):
    def message(self, text: str) -> None: ...

    def progress(self, p: TrainProgress, entry: bool) -> None: ...


@dataclass(frozen=True)
class TrainOptions:
    preempt: bool = False
    resume: bool = False
    #: replace the job's image (tests: the locally built CPU image)
    image: str | None = None
    results_dir: Path = Path("results")
    #: start-up budget per restored service (default: the service's own)
    timeout: float | None = None


@dataclass
class TrainResult:
    job: JobPlan
    run_dir: Path
    adapter: Path
    sha256: str
    progress: TrainProgress
    timings: dict[str, float] = field(default_factory=dict)
    preempted: list[str] = field(default_factory=list)
    served: str | None = None


def find_job(plan: Plan, name: str) -> JobPlan:
    for j in plan.jobs:
        if j.name == name:
            return j
    known = ", ".join(j.name for j in plan.jobs) or "none"
    raise KitError(f"stack '{plan.stack.name}' has no job {name!r} (jobs: {known})")


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A killed ``kit train`` (SIGTERM) cleans up like Ctrl-C."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class _Clock:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.timings[name] = round(time.monotonic() - t0, 2)


def run_train(
    stack_ref: str, job_name: str, options: TrainOptions, listener: TrainListener
) -> TrainResult:
    plan = build_plan(load_stack(stack_ref))
    job = find_job(plan, job_name)
    image = options.image or job.image
    if image is None:
        raise KitError(
            f"job '{job.name}' has no image: set defaults.train_image in the stack (a pinned "
            "image with TRL, PEFT and accelerate; README 'Training jobs')"
        )
    dep = record.find(stack_ref)
    project = Project(dep.plan, options=dep.render_options) if dep is not None else None
    if project is not None and (why := project.available()):
        raise EngineError(why)
    busy = preempt.busy_services(dep.plan, project, job.gpus) if dep and project else []
    if busy and not options.preempt:
        raise preempt.refuse(job.name, job.gpus, busy, plan.stack.name)
    clock = _Clock()
    run_dir = new_run_dir(options.results_dir, plan.stack.name, job.name)
    with _sigterm_as_interrupt():
        if job.method == "distill":
            _distill_data(plan, job, dep, listener, clock)
        resumed = _prepare_work(job, options.resume, listener)
        config = render_config(
            job, stack=plan.stack.name, trl_args=dict(plan.stack.jobs[job.name].trl_args),
            resume=resumed > 0,
        )  # fmt: skip
        (run_dir / CONFIG_NAME).write_text(config, encoding="utf-8")
        container = JobContainer(plan.stack.name, project_folder(plan.stack.name), job)
        container.write(render_job_compose(plan.stack.name, job, image, run_dir.resolve()))
        stopped = [b.service.name for b in busy]
        restored = False
        running: Deployment | None = dep
        try:
            if stopped:
                assert project is not None
                listener.message(
                    f"--preempt: stopping {', '.join(b.describe() for b in busy)} for job "
                    f"'{job.name}'"
                )
                with clock.phase("preempt_stop_s"):
                    preempt.stop(project, stopped)
            progress = _run_container(container, job, run_dir, listener, clock, resumed)
            with clock.phase("publish_s"):
                adapter, digest = _publish(job)
            listener.message(
                f"adapter '{job.output}' published at {adapter} (sha256 {digest[:12]})"
            )
            if running is not None and job.serve in {s.name for s in running.plan.services}:
                running = _list_adapter(running, job)
            if stopped:
                assert running is not None
                restored = True
                _restore(running, stopped, options, listener, clock)
            served = _serve(running, job, stopped, listener, clock) if running else None
        except BaseException as exc:
            _cleanup(container)
            if stopped and not restored:
                assert running is not None
                try:
                    _restore(running, stopped, options, listener, clock)
                except KitError as rexc:
                    if isinstance(exc, KitError):
                        exc.message += f"\n  restoring the preempted services failed too: {rexc}"
            if isinstance(exc, KeyboardInterrupt):
                raise KitError(
                    f"job '{job.name}' interrupted: its container was removed"
                    + (f"; {', '.join(stopped)} restored" if stopped else ""),
                    hint=f"`kit train {stack_ref} {job.name} --resume` continues from the last "
                    "checkpoint",
                ) from None
            raise
        _cleanup(container)
    if served is None and job.serve is not None and dep is None:
        listener.message(
            f"stack '{plan.stack.name}' is not up: `kit up` serves '{job.output}' from "
            f"'{job.serve}' (listed with --lora-modules)"
        )
    result = TrainResult(job, run_dir, adapter, digest, progress, clock.timings, stopped, served)
    _write_results(result, plan)
    return result


def _distill_data(
    plan: Plan, job: JobPlan, dep: Deployment | None, listener: TrainListener, clock: _Clock
) -> None:
    from kit.train.distill import collect

    if dep is None:
        raise KitError(
            f"job '{job.name}' distills from the teacher '{job.teacher}', but stack "
            f"'{plan.stack.name}' is not up",
            hint=f"`kit up {plan.stack.name}` first: the teacher answers through the running stack",
        )
    spec = plan.stack.jobs[job.name]
    listener.message(
        f"collecting the teacher's answers ({job.data_lines} prompts) from '{job.teacher}'"
    )
    with clock.phase("collect_s"):
        path, n = collect(dep.plan, job, teacher_model=spec.teacher_model,
                          max_tokens=spec.teacher_max_tokens, quiet=False)  # fmt: skip
    listener.message(f"teacher answers: {n} examples in {path}")


def _prepare_work(job: JobPlan, resume: bool, listener: TrainListener) -> int:
    """The step a run continues from (0: from the start, the old checkpoints removed)."""
    work = Path(job.work_host_path)
    out = work / Path(OUTPUT_DIR).name
    work.mkdir(parents=True, exist_ok=True)
    steps = []
    for c in out.glob("checkpoint-*") if out.is_dir() else []:
        tail = c.name.rsplit("-", 1)[-1]
        if tail.isdigit() and (c / "trainer_state.json").is_file():
            steps.append(int(tail))
    if resume:
        if steps:
            listener.message(f"--resume: continuing from checkpoint-{max(steps)}")
            return max(steps)
        listener.message("--resume: no checkpoint yet; starting from the beginning")
    if out.exists():
        shutil.rmtree(out)
    return 0


def _run_container(
    container: JobContainer,
    job: JobPlan,
    run_dir: Path,
    listener: TrainListener,
    clock: _Clock,
    resumed_step: int,
) -> TrainProgress:
    progress = TrainProgress(total=job.total_steps, step=resumed_step)
    parser = LogParser(progress, on_change=listener.progress)
    log_path = run_dir / "train.log"
    listener.message(
        f"training '{job.name}' ({job.method}, trl {job.trl_command}) on GPU "
        f"{','.join(map(str, job.gpus))}: {job.total_steps} steps"
    )
    with clock.phase("train_s"):
        container.start()
        with log_path.open("wb") as log:
            for chunk in container.follow():
                log.write(chunk)
                parser.feed(chunk)
                if progress.nan_loss:
                    listener.message("the loss became NaN: stopping the job")
                    container.stop()
                    break
        parser.close()
        state = _wait_stopped(container)
    if state is None or state.exit_code != 0 or progress.nan_loss:
        log_text = log_path.read_text(encoding="utf-8", errors="replace")
        raise _failure(job, state, log_text, progress)
    return progress


def _wait_stopped(container: JobContainer, timeout: float = 60.0) -> JobState | None:
    deadline = time.monotonic() + timeout
    while True:
        state = container.state()
        if state is None or state.stopped or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def _failure(job: JobPlan, state: JobState | None, log: str, p: TrainProgress) -> TrainFailed:
    code = state.exit_code if state else None
    diag = diagnose(log, oom_killed=bool(state and state.oom_killed), exit_code=code)
    lines = [ln for ln in log.replace("\r", "\n").splitlines() if ln.strip()][-LOG_TAIL:]
    last = "\n".join("    | " + ln[:300] for ln in lines)
    why = "the loss became NaN" if p.nan_loss else f"its container exited ({code})"
    return TrainFailed(
        f"job '{job.name}' failed at step {p.step}/{p.total}: {why}\n  last log lines:\n{last}\n"
        f"  diagnosis: {diag.describe()}"
    )


def _publish(job: JobPlan) -> tuple[Path, str]:
    """Copy the trained adapter from the work folder to adapters_root/OUTPUT atomically."""
    src = Path(job.work_host_path) / Path(OUTPUT_DIR).name
    missing = [f for f in serving.ADAPTER_FILES if not (src / f).is_file()]
    if job.full:
        missing = [] if (src / "config.json").is_file() else ["config.json"]
    if missing:
        raise KitError(f"job '{job.name}' finished but {src} lacks {', '.join(missing)}")
    dest = Path(job.adapter_host_path)
    tmp = dest.with_name(f".{dest.name}.tmp")
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.name != "training_args.bin":
            shutil.copy2(f, tmp / f.name)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest, content_hash(dest)


def _list_adapter(dep: Deployment, job: JobPlan) -> Deployment:
    """The record with the adapter listed on its serving service (written to disk)."""
    assert job.serve is not None
    services = tuple(
        dataclasses.replace(s, engine_args=serving.with_adapter(s.engine_args, job.output))
        if s.name == job.serve and "--enable-lora" in s.engine_args
        else s
        for s in dep.plan.services
    )
    plan = dataclasses.replace(dep.plan, services=services)
    record.write(dep.folder, plan, image_override=dep.image_override, state=dep.state,
                 detail=dep.detail, started_at=dep.started_at)  # fmt: skip
    return dataclasses.replace(dep, plan=plan)


def _restore(
    dep: Deployment,
    names: list[str],
    options: TrainOptions,
    listener: TrainListener,
    clock: _Clock,
) -> None:
    listener.message(f"restoring {', '.join(names)}")
    project = Project(dep.plan, options=dep.render_options)
    project.write()
    with clock.phase("restore_s"):
        preempt.restore(dep.plan, project, names, timeout=options.timeout)
    listener.message(f"{', '.join(names)} ready again")


def _serve(
    dep: Deployment, job: JobPlan, restarted: list[str], listener: TrainListener, clock: _Clock
) -> str | None:
    from kit.client import endpoint_for

    if job.serve is None or job.serve not in {s.name for s in dep.plan.services}:
        return None
    svc = dep.plan.service(job.serve)
    if "--enable-lora" not in svc.engine_args:
        listener.message(
            f"service '{svc.name}' runs without LoRA (started before the job named it): "
            f"`kit up {dep.plan.stack.name}` serves '{job.output}'"
        )
        return None
    ep = endpoint_for(dep.plan, svc)
    how: str
    with clock.phase("serve_s"):
        if svc.name in restarted:
            how = f"listed by '{svc.name}' (restarted after --preempt)"
        elif serving.runtime_updates(svc.env):
            body = {"lora_name": job.output, "lora_path": f"/adapters/{job.output}"}
            r = ep.post(serving.LOAD_PATH, body, timeout=120)
            how = f"loaded into '{svc.name}' at runtime ({serving.LOAD_PATH})"
            if r.status == 400 and "already been loaded" in r.text(500):
                # an adapter of that name runs (an earlier run): replace it with the new one
                ep.post(serving.UNLOAD_PATH, {"lora_name": job.output}, timeout=120)
                r = ep.post(serving.LOAD_PATH, body, timeout=120)
                how = f"reloaded into '{svc.name}' at runtime (the previous version unloaded)"
            if r.status != 200:
                raise KitError(
                    f"service '{svc.name}' refused to load adapter '{job.output}': HTTP "
                    f"{r.status} {r.text(300)}"
                )
        else:
            listener.message(f"restarting '{svc.name}' to serve '{job.output}' "
                             f"({serving.RUNTIME_ENV} is not set on it)")  # fmt: skip
            project = Project(dep.plan, options=dep.render_options)
            project.write()
            preempt.restore(dep.plan, project, [svc.name])
            how = f"'{svc.name}' restarted with the adapter listed"
        _, ids = ep.served_models(timeout=10)
        if job.output not in ids:
            raise KitError(f"service '{svc.name}' does not list '{job.output}' in /v1/models")
    listener.message(f"serving '{job.output}': {how}")
    return how


def _cleanup(container: JobContainer) -> None:
    with suppress(EngineError):
        container.remove()


def _write_results(result: TrainResult, plan: Plan) -> None:
    d = result.run_dir
    p = result.progress
    write_history(d / "log_history.jsonl", p.history)
    loss_plot(p.history, d / "loss.png", f"{plan.stack.name}/{result.job.name}")
    losses = [e["loss"] for e in p.history if isinstance(e.get("loss"), float)]
    summary: dict[str, Any] = {
        "stack": plan.stack.name,
        "job": result.job.name,
        "method": result.job.method,
        "gpus": list(result.job.gpus),
        "steps": p.step,
        "total_steps": p.total,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "trainer_summary": p.summary,
        "timings_s": result.timings,
        "adapter": str(result.adapter),
        "adapter_sha256": result.sha256,
        "preempted": result.preempted,
        "served": result.served,
    }
    write_json(d / "summary.json", summary)
