"""Planning a stack's training jobs: validation, GPU placement, memory, the TRL config, and
the LoRA flags of the services that serve the jobs' adapters.

Called by :func:`kit.single_host_plan.build_single_host_plan` once the services are planned.
Every problem names the job (or service) and the field, and all of them are reported together.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from kit import kinds
from kit import trl_versions as tv
from kit.gpus import gpus_request_problem
from kit.train import serving
from kit.train.config import build_config, config_problems, render_config, total_steps
from kit.train.data import check_data
from kit.train.jobplan import WORK_DIR, JobPlan
from kit.train.memory import estimate
from kit.train.model_check import ArchitectureUnreadable, read_architecture
from kit.train.spec import Job

if TYPE_CHECKING:
    from kit.service_plan import ServicePlan
    from kit.spec import Stack


def _ids(gpus: tuple[int, ...]) -> str:
    return ",".join(map(str, gpus))


def plan_jobs(
    stack: Stack,
    services: tuple[ServicePlan, ...],
    problems: list[str],
    notes: list[str],
) -> tuple[tuple[JobPlan, ...], tuple[ServicePlan, ...]]:
    """The stack's jobs as :class:`JobPlan` and ``services`` with their LoRA flags."""
    if not stack.jobs:
        return (), services
    by_name = {s.name: s for s in services}
    root = stack.defaults.adapters_root
    if root is None:
        problems.append(
            "field 'defaults.adapters_root': the stack has jobs, which write LoRA adapters "
            "into a host folder: set adapters_root"
        )
    tv_problem = tv.check_version(stack.defaults.trl_version)
    if tv_problem:
        problems.append(f"field 'defaults.trl_version': {tv_problem}")
    jobs = []
    for name, job in stack.jobs.items():
        jp = _plan_job(stack, name, job, by_name, root, problems, notes, tv_problem is None)
        if jp is not None:
            jobs.append(jp)
    return tuple(jobs), _serving(stack, services, jobs, problems)


def _where(name: str, fieldname: str) -> str:
    return f"job '{name}', field '{fieldname}'"


def _base_path(
    stack: Stack, name: str, job: Job, by_name: dict[str, ServicePlan], problems: list[str]
) -> tuple[str | None, str]:
    if job.service is not None:
        svc = by_name.get(job.service)
        if svc is None or not kinds.kind(svc.kind).generates:
            problems.append(f"{_where(name, 'service')}: {_not_chat(job.service, by_name)}")
            return None, ""
        if svc.model_host_path is None:
            problems.append(
                f"{_where(name, 'service')}: service '{svc.name}' takes its model from the hub; "
                "training needs a local folder: give base"
            )
            return None, ""
        return svc.model_host_path, f"service {svc.name}"
    assert job.base is not None
    model_root = stack.defaults.model_root
    if job.base.startswith("/"):
        return job.base, "base"
    if model_root is None:
        problems.append(
            f"{_where(name, 'base')}: {job.base!r} is a folder under model_root, which is not "
            "set; set defaults.model_root"
        )
        return None, ""
    return f"{stack.host_path(model_root).rstrip('/')}/{job.base.strip('/')}", "base"


def _not_chat(ref: str, by_name: dict[str, ServicePlan]) -> str:
    chats = [s.name for s in by_name.values() if kinds.kind(s.kind).generates]
    if ref in by_name:
        return (
            f"service '{ref}' is kind '{by_name[ref].kind}', not a chat service (chat services: "
            f"{', '.join(chats) or 'none'})"
        )
    return f"no service '{ref}' in the stack (chat services: {', '.join(chats) or 'none'})"


def _plan_job(
    stack: Stack,
    name: str,
    job: Job,
    by_name: dict[str, ServicePlan],
    root: str | None,
    problems: list[str],
    notes: list[str],
    check_keys: bool,
) -> JobPlan | None:
    before = len(problems)
    base, base_from = _base_path(stack, name, job, by_name, problems)
    arch = None
    if base is not None:
        try:
            arch = read_architecture(Path(base))
        except ArchitectureUnreadable as exc:
            fieldname = "service" if job.service else "base"
            problems.append(f"{_where(name, fieldname)}: the base model is not readable: {exc}")
    if arch is not None and job.uses_lora:
        for t in job.lora.target_modules:
            if not arch.matches(t):
                problems.append(
                    f"{_where(name, 'lora.target_modules')}: {t!r} is not a module of the base "
                    f"model ({arch.model_type or 'unknown type'}); its linear modules are "
                    f"{', '.join(arch.leaf_names())}"
                )
    data_path = Path(stack.host_path(job.data))
    lines = 0
    if not data_path.is_file():
        problems.append(f"{_where(name, 'data')}: {data_path} is not a file")
    else:
        check = check_data(data_path, job.method)
        lines = check.lines
        if check.problem:
            problems.append(f"{_where(name, 'data')}: {data_path}: {check.problem}")
    for fieldname, ref in (("teacher", job.teacher), ("serve", job.serve)):
        if ref is not None and (ref not in by_name or not kinds.kind(by_name[ref].kind).generates):
            problems.append(f"{_where(name, fieldname)}: {_not_chat(ref, by_name)}")
    if job.teacher_model is not None and job.teacher in by_name:
        teacher = by_name[job.teacher]
        offered = [teacher.served_name] + [
            j.output for j in stack.jobs.values() if j.serve == teacher.name and not j.full
        ]
        if job.teacher_model not in offered:
            problems.append(
                f"{_where(name, 'teacher_model')}: service '{teacher.name}' serves "
                f"{', '.join(offered)}, not {job.teacher_model!r}"
            )
    if job.serve in by_name and base is not None:
        server = by_name[job.serve]
        same = server.model_host_path is not None and Path(server.model_host_path).resolve() == (
            Path(base).resolve()
        )
        if not same:
            problems.append(
                f"{_where(name, 'serve')}: service '{server.name}' serves "
                f"{server.model_host_path or server.model}, not the job's base {base}: an "
                "adapter only fits the model it was trained on"
            )
    gpus, auto = _gpus(stack, name, job, problems)
    memory = None
    if arch is not None and stack.host is not None:
        memory = estimate(
            arch,
            method=job.method,
            full=job.full,
            lora_r=job.lora.r,
            target_modules=job.lora.target_modules,
            dtype=job.dtype,
            batch_size=job.batch_size,
            max_length=job.max_length,
            gpu_memory_gib=stack.host.memory_gib,
        )
        if not memory.fits:
            problems.append(
                f"{_where(name, 'batch_size')}: does not fit: needs {memory.describe()}; "
                f"{memory.needed_gib - memory.budget_gib:.1f} GiB too much per GPU. Use LoRA "
                "instead of full, a smaller batch_size (with more gradient_accumulation) or "
                "max_length, or a larger GPU"
            )
    if len(problems) > before:
        return None
    assert base is not None
    work = f"{stack.host_path(root or '.').rstrip('/')}/{WORK_DIR}/{name}"
    plan = JobPlan(
        name=name,
        method=job.method,
        trl_command=job.trl_command,
        base_host_path=base,
        base_from=base_from,
        data_host_path=str(data_path),
        data_lines=lines,
        teacher=job.teacher,
        gpus=gpus,
        auto_placed=auto,
        output=job.output,
        adapter_host_path=f"{stack.host_path(root or '.').rstrip('/')}/{job.output}",
        work_host_path=work,
        serve=job.serve,
        full=job.full,
        lora_r=job.lora.r if job.uses_lora else None,
        lora_alpha=job.lora.lora_alpha if job.uses_lora else None,
        lora_dropout=job.lora.dropout if job.uses_lora else None,
        target_modules=job.lora.target_modules if job.uses_lora else (),
        total_steps=total_steps(job, lines, len(gpus)),
        config=build_config(job),
        image=stack.defaults.train_image,
        trl_version=stack.defaults.trl_version,
        memory_gib=memory.needed_gib if memory else None,
        memory_budget_gib=memory.budget_gib if memory else None,
        memory_detail=memory.describe() if memory else "",
    )
    if check_keys:
        text = render_config(plan, stack=stack.name, trl_args=job.trl_args)
        for fieldname, why in config_problems(
            text, method=job.method, version=stack.defaults.trl_version, trl_args=job.trl_args
        ):
            where = _where(name, fieldname) if fieldname == "trl_args" else _where(name, "method")
            problems.append(f"{where}: {why}")
    busy = sorted({s.name for s in by_name.values() if set(s.gpus) & set(gpus)})
    msg = f"job {name}: {'placed on' if auto else 'runs on'} GPU {_ids(gpus)}"
    if busy:
        msg += f", used by {', '.join(busy)}: `kit train` refuses while they run, unless --preempt"
    notes.append(msg)
    return plan


def _gpus(stack: Stack, name: str, job: Job, problems: list[str]) -> tuple[tuple[int, ...], bool]:
    assert stack.host is not None
    host = stack.host.gpus
    wrong = gpus_request_problem(job.gpus, host)
    if wrong:
        problems.append(f"{_where(name, 'gpus')}: {wrong}")
    if not isinstance(job.gpus, int):
        return tuple(job.gpus), False
    n = job.gpus
    if n > host:
        return (), True
    used = {g for s in stack.services.values() if not isinstance(s.gpus, int) for g in s.gpus}
    windows = [tuple(range(s, s + n)) for s in range(host - n + 1)]
    best = min(
        windows, key=lambda w: (sum(1 for g in w if g in used), 0 if w[0] % n == 0 else 1, w[0])
    )
    return best, True


def _serving(
    stack: Stack, services: tuple[ServicePlan, ...], jobs: list[JobPlan], problems: list[str]
) -> tuple[ServicePlan, ...]:
    version = stack.defaults.version
    out = []
    for s in services:
        serving_jobs = [j for j in jobs if j.serve == s.name and j.lora_r is not None]
        named = [n for n, j in stack.jobs.items() if j.serve == s.name]
        if not named:
            out.append(s)
            continue
        svc = stack.services[s.name]
        wanted = max([j.lora_r or 0 for j in serving_jobs] or [8])
        if svc.max_lora_rank is not None:
            rank = svc.max_lora_rank
            if rank not in serving.max_lora_ranks(version):
                ok = ", ".join(map(str, serving.max_lora_ranks(version)))
                problems.append(
                    f"service '{s.name}', field 'max_lora_rank': vLLM {version} takes {ok}, "
                    f"not {rank}"
                )
            for j in serving_jobs:
                if (j.lora_r or 0) > rank:
                    problems.append(
                        f"{_where(j.name, 'lora.r')}: rank {j.lora_r} is above the "
                        f"max_lora_rank {rank} of service '{s.name}', which serves it; lower "
                        "the rank or raise max_lora_rank"
                    )
        else:
            found = serving.rank_for(wanted, version)
            if found is None:
                problems.append(
                    f"{_where(serving_jobs[0].name, 'lora.r')}: rank {wanted} is above what "
                    f"vLLM {version} serves ({serving.max_lora_ranks(version)[-1]})"
                )
                found = wanted
            rank = found
        done = [j.output for j in serving_jobs if serving.finished(Path(j.adapter_host_path))]
        args = serving.lora_args(rank, len(named), done)
        root = stack.defaults.adapters_root
        out.append(
            dataclasses.replace(
                s,
                engine_args=(*s.engine_args, *args),
                adapters_host_path=stack.host_path(root) if root else None,
            )
        )
    return tuple(out)
