"""Human-readable views of a plan (``kit plan``)."""

from __future__ import annotations

import shlex

from rich import box
from rich.console import Console
from rich.table import Table

from kit.service_plan import gpu_ids
from kit.stack_plan import Plan
from kit.train.report import adapter_lines, jobs_table


def console(stderr: bool = False) -> Console:
    """A console that prints plain text when not on a terminal (logs, CI, pipes)."""
    probe = Console(stderr=stderr)
    width = None if probe.is_terminal else 200
    return Console(stderr=stderr, width=width, highlight=False)


def print_plan(out: Console, plan: Plan) -> None:
    stack = plan.stack
    h = stack.host
    out.print(
        f"stack '{stack.name}' ({relative_path(stack.source)}): vLLM {stack.defaults.vllm_version}, "
        f"{h.gpus} x {h.gpu_model or 'GPU'} {h.memory_gib:g} GiB, "
        f"headroom {stack.defaults.headroom:.2f}, ports on {stack.defaults.bind_address}",
        style="bold",
        soft_wrap=True,
    )
    out.print(gpu_table(plan))
    out.print(service_table(plan))
    jobs = jobs_table(plan)  # kit.train: the stack's training jobs and the adapters served
    if jobs is not None:
        out.print(jobs)
        out.print("adapters served", style="bold")
        for line in adapter_lines(plan):
            out.print(f"  {line}", soft_wrap=True, markup=False)
    from kit.gateway_render import plan_lines  # the gateway's routes, Prometheus' targets

    for line in plan_lines(plan):
        out.print(line, soft_wrap=True, markup=False)
    for title, items, style in (("notes", plan.notes, ""), ("warnings", plan.warnings, "yellow")):
        if items:
            out.print(title, style="bold")
            for item in items:
                out.print(f"  - {item}", style=style, soft_wrap=True, markup=False)
    out.print("\nengine command lines", style="bold")
    for s in plan.services:
        out.print(f"  {s.name}:", soft_wrap=True)
        out.print(_indent(command_block(s.engine_args), "    "), soft_wrap=True, markup=False)


def command_block(args: tuple[str, ...]) -> str:
    """``vllm serve MODEL \\`` then one flag (with its value) per line, ready to paste."""
    lines = ["vllm serve " + (shlex.quote(args[0]) if args else "")]
    for a in args[1:]:
        if a.startswith("-") or len(lines) == 1:
            lines.append(shlex.quote(a))
        else:
            lines[-1] += " " + shlex.quote(a)
    return " \\\n  ".join(lines)


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def relative_path(path: str) -> str:
    from pathlib import Path

    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def gpu_table(plan: Plan) -> Table:
    names = [s.name for s in plan.services]
    t = Table(
        title="GPU map: memory fraction per service", box=box.SIMPLE_HEAD, title_justify="left"
    )
    t.add_column("GPU", justify="right")
    for n in names:
        t.add_column(n, justify="center")
    t.add_column("total", justify="right")
    for g, users in plan.gpu_map().items():
        frac = dict(users)
        total = sum(frac.values())
        cells = [f"{frac[n]:.2f}" if n in frac else "." for n in names]
        t.add_row(str(g), *cells, f"{total:.2f}" if users else "free")
    return t


def service_table(plan: Plan) -> Table:
    t = Table(title="services in start order", box=box.SIMPLE_HEAD, title_justify="left")
    for col in (
        "#",
        "service",
        "kind",
        "served name",
        "GPUs",
        "TP x PP",
        "fraction",
        "port",
        "waits for",
        "fit per GPU",
        "startup",
    ):
        t.add_column(col)
    bind = plan.stack.defaults.bind_address
    for i, s in enumerate(plan.services, 1):
        gpus = gpu_ids(s.gpus) + (" (auto)" if s.auto_placed else "")
        frac = f"{s.fraction:.2f}" + (
            "" if s.fraction_source == "stack" else f" ({s.fraction_source})"
        )
        fit = "-" if s.fit is None else f"{s.fit.needed_gib:.1f}/{s.fit.budget_gib:.1f} GiB"
        t.add_row(
            str(i), s.name, s.kind, s.served_name, gpus, f"{s.tp} x {s.pp}", frac,
            f"{bind}:{s.port}" if s.published else "via gateway", ", ".join(s.depends_on) or "-",
            fit, f"{s.startup_timeout}s",
        )  # fmt: skip
    return t


def check_table(checks: list) -> Table:  # type: ignore[type-arg]
    t = Table(title="smoke checks", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("service", "check", "result", "latency", "detail"):
        t.add_column(col)
    for c in checks:
        result = "[green]pass[/]" if c.ok else "[bold red]FAIL[/]"
        t.add_row(c.service, c.name, result, f"{1000 * c.seconds:.0f} ms", c.detail)
    return t


def findings_table(findings: list) -> Table:  # type: ignore[type-arg]
    t = Table(title="kit doctor", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("check", "status", "finding", "fix"):
        t.add_column(col)
    style = {"ok": "green", "warn": "yellow", "fail": "bold red"}
    for f in findings:
        t.add_row(f.check, f"[{style[f.status]}]{f.status}[/]", f.message, f.fix)
    return t


class BenchProgress:
    """A :data:`kit.bench.ProgressFn`: a live bar per run on a terminal, else a line every 5 s."""

    def __init__(self, out: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.out = out
        self.live = out.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>7.1f} req/s  {task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=out,
            disable=not self.live,
        )
        self.tasks: dict[str, int] = {}
        self.last_line = 0.0

    def __enter__(self) -> BenchProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def __call__(self, states: dict, elapsed: float) -> None:  # type: ignore[type-arg]
        rate = {k: (st.done / elapsed if elapsed > 0 else 0.0) for k, st in states.items()}
        if self.live:
            for label, st in states.items():
                if label not in self.tasks:
                    self.tasks[label] = self.progress.add_task(
                        label, total=st.total, rate=0.0, failed=0
                    )
                self.progress.update(
                    self.tasks[label], completed=st.done, rate=rate[label], failed=st.failed
                )
            return
        finished = all(st.done >= st.total for st in states.values())
        if elapsed - self.last_line >= 5.0 or finished:
            self.last_line = elapsed if not finished else float("inf")
            parts = ", ".join(
                f"{k}: {st.done}/{st.total} done, {st.failed} failed, {rate[k]:.1f} req/s"
                for k, st in states.items()
            )
            self.out.print(f"[{elapsed:6.1f}s] {parts}", markup=False, soft_wrap=True)


def bench_table(result) -> Table:  # type: ignore[no-untyped-def]
    """Figures side by side, one column per run."""
    t = Table(title=f"kit bench ({result.stage})", box=box.SIMPLE_HEAD, title_justify="left")
    t.add_column("metric")
    for r in result.runs:
        t.add_column(r.spec.label, justify="right")

    def row(name: str, get) -> None:  # type: ignore[no-untyped-def]
        vals = [get(r.summary) for r in result.runs]
        if any(v is not None for v in vals):
            t.add_row(name, *["-" if v is None else v for v in vals])

    def num(key: str, fmt: str = "{:.1f}"):  # type: ignore[no-untyped-def]
        return lambda s: None if s.get(key) is None else fmt.format(s[key])

    def pct(key: str, p: str):  # type: ignore[no-untyped-def]
        return lambda s: None if not s.get(key) else f"{s[key][p]:.1f}"

    t.add_row(
        "service / parallel", *[f"{r.spec.service.name} / {r.spec.parallel}" for r in result.runs]
    )
    row("requests ok / failed", lambda s: f"{s['completed']} / {s['failed']}")
    row("duration s", num("duration_s", "{:.2f}"))
    row("requests/s", num("request_throughput"))
    row("output tokens/s", num("output_throughput"))
    row("total tokens/s", num("total_token_throughput"))
    row("input tokens/s", num("input_token_throughput"))
    for key, label in (
        ("ttft_ms", "TTFT ms"),
        ("tpot_ms", "TPOT ms"),
        ("itl_ms", "ITL ms"),
        ("e2e_ms", "E2E ms"),
    ):
        for p in ("mean", "p50", "p90", "p95", "p99"):
            row(f"{label} {p}", pct(key, p))
    row("token counts from", lambda s: s.get("token_count_source"))
    return t
