"""``kit bench``: load-test one service (with parallel/number sweeps) or several at once (mix),
keep every request, and write a results folder a person can read.

Results folder: ``args.json`` (the run's arguments), ``summary.json``, ``requests.jsonl`` (one
line per request, failures with their error bodies), ``latency.png``, ``throughput.png``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kit import __version__, loadgen
from kit.errors import KitError
from kit.loadgen import Record, RunState, Target
from kit.metrics import summarize
from kit.service_plan import ServicePlan
from kit.stack_plan import Plan
from kit.workload import WorkloadSpec, apis_for, build


@dataclass(frozen=True)
class RunSpec:
    label: str
    service: ServicePlan
    workload: WorkloadSpec
    parallel: int
    number: int


@dataclass(frozen=True)
class BenchOptions:
    pairs: tuple[tuple[int, int], ...] = ((32, 200),)
    rate: float | None = None
    warmup: int = 0
    read_timeout: float = 1200.0
    max_failure_rate: float = 0.0
    results_dir: Path = Path("results")
    plots: bool = True
    api: str | None = None
    workload: WorkloadSpec = field(default_factory=lambda: WorkloadSpec(api="chat"))
    #: "gateway": send every request through the stack's gateway (kit.gateway_probe)
    via: str | None = None
    #: record the engines' /metrics during each run (server.jsonl, server.png; kit.observe)
    server_metrics: bool = True


@dataclass
class RunResult:
    spec: RunSpec
    summary: dict[str, Any]
    records: list[Record]


@dataclass
class BenchResult:
    folder: Path
    runs: list[RunResult]
    stage: str  # "sweep" | "mix"

    def failed_runs(self, max_rate: float) -> list[RunResult]:
        return [r for r in self.runs if r.summary["failure_rate"] > max_rate + 1e-12]


ProgressFn = Callable[[dict[str, RunState], float], None]


def parse_pairs(parallel: tuple[int, ...], number: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """``--parallel 1 8 32 --number 50 200 800`` -> three runs; one value pairs with all."""
    if not parallel or not number:
        raise KitError("--parallel and --number need at least one value each")
    if len(parallel) == len(number):
        return tuple(zip(parallel, number, strict=True))
    if len(parallel) == 1:
        return tuple((parallel[0], n) for n in number)
    if len(number) == 1:
        return tuple((p, number[0]) for p in parallel)
    raise KitError(
        f"--parallel has {len(parallel)} values and --number {len(number)}: give the same "
        "count (one run per pair), or one value for either"
    )


def parse_mix(text: str, plan: Plan) -> dict[str, int]:
    """``chat=8,embed=4`` -> {service: parallel}. Keys are service names or kinds."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, val = part.partition("=")
        if not sep or not val.strip().isdigit() or int(val) < 1:
            raise KitError(f"--mix item {part!r} must be NAME=PARALLEL, e.g. chat=8")
        names = [s.name for s in plan.services if key in (s.name, s.kind)]
        if not names:
            known = ", ".join(f"{s.name} ({s.kind})" for s in plan.services)
            raise KitError(f"--mix: no service or kind {key!r} in the stack; services: {known}")
        if len(names) > 1 and key not in [s.name for s in plan.services]:
            raise KitError(f"--mix: kind {key!r} matches {', '.join(names)}; name one of them")
        name = key if key in names else names[0]
        out[name] = int(val)
    if not out:
        raise KitError("--mix needs at least one NAME=PARALLEL")
    return out


def workload_for(service: ServicePlan, opts: BenchOptions) -> WorkloadSpec:
    allowed = apis_for(service.kind)
    api = opts.api or allowed[0]
    if api not in allowed:
        raise KitError(
            f"service '{service.name}' is kind {service.kind}: --api {api} does not fit; use "
            f"{' or '.join(allowed)}"
        )
    return replace(opts.workload, api=api)


def run_bench(
    plan: Plan,
    service: str | None,
    opts: BenchOptions,
    *,
    mix: dict[str, int] | None = None,
    baseline: bool = False,
    progress: ProgressFn | None = None,
) -> BenchResult:
    if mix:
        stage = "mix"
        number = opts.pairs[0][1]
        together = [
            RunSpec(
                f"mix:{name}", plan.service(name), workload_for(plan.service(name), opts), p, number
            )
            for name, p in mix.items()
        ]
        groups = (
            [[replace(r, label=f"alone:{r.service.name}")] for r in together] if baseline else []
        )
        groups.append(together)
        label = "mix-" + "-".join(mix)
    else:
        if service is None:
            raise KitError("name the SERVICE to benchmark, or use --mix")
        svc = plan.service(service)
        wl = workload_for(svc, opts)
        stage = "sweep"
        groups = [[RunSpec(f"p{p}-n{n}", svc, wl, p, n)] for p, n in opts.pairs]
        label = svc.replica_of or svc.name
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    folder = opts.results_dir / plan.stack.name / f"{label}-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    _write_args(folder, plan, service, opts, mix, baseline, groups)

    loadgen.install_fast_loop()
    results: list[RunResult] = []
    recorder = _server_recorder(plan, groups, folder) if opts.server_metrics else None
    with (folder / "requests.jsonl").open("w", encoding="utf-8") as out, recorder or nullcontext():
        for group in groups:
            for res in asyncio.run(_run_group(plan, group, opts, progress)):
                results.append(res)
                for r in res.records:
                    out.write(loadgen.record_json(r, res.spec.label) + "\n")
            out.flush()
    result = BenchResult(folder, results, stage)
    summary = {
        "kit_version": __version__,
        "stack": plan.stack.name,
        "vllm_version": plan.stack.defaults.vllm_version,
        "stage": stage,
        "runs": [
            {
                "label": r.spec.label,
                "service": r.spec.service.name,
                "kind": r.spec.service.kind,
                "api": r.spec.workload.api,
                "parallel": r.spec.parallel,
                "number": r.spec.number,
                "rate": opts.rate,
                **r.summary,
            }
            for r in results
        ],
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if opts.plots and any(r.summary["completed"] for r in results):
        from kit.plots import latency_plot, throughput_plot

        runs = {r.spec.label: (r.spec.service.kind, r.records) for r in results}
        latency_plot(runs, folder / "latency.png")
        throughput_plot(runs, folder / "throughput.png")
        if recorder is not None:
            recorder.plot(folder / "server.png")
    return result


def _server_recorder(plan: Plan, groups: list[list[RunSpec]], folder: Path):  # type: ignore[no-untyped-def]
    """Records the benchmarked engines' /metrics (every replica of a service) during the run."""
    from kit.observe import Scraper, ServerRecorder, engines

    names = list(dict.fromkeys(r.service.replica_of or r.service.name for g in groups for r in g))
    targets = engines(plan, names)
    project = None
    if any(not t.published for t in targets):
        from kit.engine import Project

        project = Project(plan)
    return ServerRecorder(Scraper(plan, project), targets, folder)


async def _run_group(
    plan: Plan, group: list[RunSpec], opts: BenchOptions, progress: ProgressFn | None
) -> list[RunResult]:
    states = {r.label: RunState(total=r.number) for r in group}
    t0 = time.perf_counter()
    async with loadgen.session(opts.read_timeout) as sess:
        ticker = asyncio.create_task(_tick(states, t0, progress)) if progress else None
        try:
            outs = await asyncio.gather(
                *(_one(sess, plan, r, opts, states[r.label]) for r in group)
            )
        finally:
            if ticker:
                ticker.cancel()
        if progress:
            progress(states, time.perf_counter() - t0)
    return [
        RunResult(spec, summarize(records, duration, spec.service.kind), records)
        for spec, (records, duration) in zip(group, outs, strict=True)
    ]


def _target(plan: Plan, spec: RunSpec, via: str | None = None) -> Target:
    from kit.gateway_probe import target_endpoint

    ep = target_endpoint(plan, spec.service, via)
    return Target(spec.label, ep.base_url, spec.service.served_name, ep.api_key)


async def _one(sess, plan: Plan, spec: RunSpec, opts: BenchOptions, state: RunState):  # type: ignore[no-untyped-def]
    target = _target(plan, spec, opts.via)
    workload = build(spec.workload, spec.service.served_name, spec.number + opts.warmup)
    return await loadgen.run(
        sess,
        target,
        workload,
        parallel=spec.parallel,
        number=spec.number,
        rate=opts.rate,
        warmup=opts.warmup,
        seed=spec.workload.seed,
        state=state,
    )


async def _tick(states: dict[str, RunState], t0: float, progress: ProgressFn) -> None:
    while True:
        progress(states, time.perf_counter() - t0)
        await asyncio.sleep(0.2)


def _write_args(folder: Path, plan: Plan, service: str | None, opts: BenchOptions,
                mix: dict[str, int] | None, baseline: bool, groups: list[list[RunSpec]]) -> None:  # fmt: skip
    args = {
        "kit_version": __version__,
        "time_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "stack": plan.stack.name,
        "stack_file": plan.stack.source,
        "service": service,
        "mix": mix,
        "baseline": baseline,
        "pairs": opts.pairs,
        "rate": opts.rate,
        "warmup": opts.warmup,
        "read_timeout": opts.read_timeout,
        "max_failure_rate": opts.max_failure_rate,
        "api": opts.api,
        "via": opts.via,
        "workload": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts.workload).items()},
        "targets": {
            t.name: f"{t.base_url}  (API key: {'set, not shown' if t.api_key else 'none'})"
            for t in (_target(plan, r, opts.via) for g in groups for r in g)
        },
    }  # fmt: skip
    (folder / "args.json").write_text(
        json.dumps(args, indent=2, default=str) + "\n", encoding="utf-8"
    )
