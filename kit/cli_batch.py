"""``kit batch STACK SERVICE INPUT.jsonl -o OUTPUT.jsonl``: the command and its display.

Registered on the ``kit`` group with ``cli.add_command(batch_command)``; the library is
:mod:`kit.batch`.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from kit.batch import BatchInterrupted, BatchOptions, Summary, prepare_batch, run_batch
from kit.errors import CheckFailed
from kit.record import deployed
from kit.report import console

#: Seconds between plain progress lines when stderr is not a terminal.
HEARTBEAT_S = 30.0


class RateColumn(ProgressColumn):
    """Requests per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-/s" if speed is None else f"{speed:.1f}/s", style="progress.data.speed")


class BatchProgress:
    """A :class:`kit.batch.run.BatchListener`: a live bar with rate and ETA on a terminal, a plain
    line every ``HEARTBEAT_S`` elsewhere (logs, CI, pipes), nothing when ``quiet``."""

    def __init__(self, out: Console, label: str, quiet: bool = False) -> None:
        self.out = out
        self.label = label
        self.quiet = quiet
        self.total = 0
        self.ok = 0
        self.failed = 0
        self.t0 = time.monotonic()
        self.last_beat = self.t0
        self.bar: Progress | None = None
        self.task_id: int | None = None

    def start(self, total: int) -> None:
        self.total = total
        self.t0 = self.last_beat = time.monotonic()
        if self.quiet or not self.out.is_terminal:
            return
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.out,
        )
        self.bar.start()
        self.task_id = self.bar.add_task(self.label, total=total, failed=0)

    def advance(self, ok: bool) -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        if self.bar is not None and self.task_id is not None:
            self.bar.update(self.task_id, advance=1, failed=self.failed)
            return
        now = time.monotonic()
        if not self.quiet and now - self.last_beat >= HEARTBEAT_S:
            self.last_beat = now
            self.out.print(self.line(now), markup=False, soft_wrap=True)

    def line(self, now: float) -> str:
        n = self.ok + self.failed
        rate = n / max(now - self.t0, 1e-9)
        eta = (self.total - n) / rate if rate > 0 else float("inf")
        eta_text = f"{eta:.0f}s" if eta != float("inf") else "-"
        return (
            f"[{now - self.t0:7.1f}s] {self.label}: {n}/{self.total} "
            f"({self.failed} failed), {rate:.1f}/s, ETA {eta_text}"
        )

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def print_summary(out: Console, s: Summary) -> None:
    rate = (s.done + s.failed) / s.elapsed if s.elapsed > 0 else 0.0
    failed = f"{s.failed + s.failed_before}"
    if s.failed_before:
        failed += f" ({s.failed_before} from an earlier run; --retry-failed redoes them)"
    out.print(
        f"batch: {s.requests} requests: done {s.done}, failed {failed}, "
        f"skipped {s.skipped} (already done), invalid {s.invalid}, retries {s.retries}"
        + (f", left {s.not_run}" if s.not_run else "")
        + f"; {s.elapsed:.1f}s, {rate:.1f}/s",
        markup=False,
        soft_wrap=True,
    )
    out.print(f"  output: {s.output}", markup=False, soft_wrap=True)
    if s.invalid_lines:
        out.print(f"  invalid lines (also in {s.errors_path}):", markup=False, soft_wrap=True)
        for bad in s.invalid_lines[:20]:
            out.print(f"    {bad.message}", markup=False, soft_wrap=True)
        if len(s.invalid_lines) > 20:
            out.print(f"    ... {len(s.invalid_lines) - 20} more", markup=False)
    if s.failures:
        out.print("  failures (most common first):", markup=False)
        for text, n in s.failures.most_common(5):
            out.print(f"    {n} x {text}", markup=False, soft_wrap=True)


@click.command("batch")
@click.argument("stack")
@click.argument("service")
@click.argument(
    "input_path", metavar="INPUT.jsonl", type=click.Path(dir_okay=False, path_type=Path)
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Results, one JSON line per request; an existing file is resumed.",
)
@click.option("--concurrency", type=click.IntRange(min=1), default=16, show_default=True,
              help="Requests in flight at once.")  # fmt: skip
@click.option("--max-retries", type=click.IntRange(min=0), default=5, show_default=True,
              help="Retries per request on connection errors, timeouts, HTTP 429 and 5xx.")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=600.0,
              show_default=True, metavar="SECONDS", help="Per request attempt.")  # fmt: skip
@click.option("--retry-failed", is_flag=True,
              help="Also redo lines an earlier run recorded as refused (HTTP 4xx).")  # fmt: skip
@click.option("--allow-failures", is_flag=True,
              help="Exit 0 even if some lines failed or were invalid.")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@click.option("--via", type=click.Choice(["gateway"]),
              help="Send the requests through the stack's gateway (by model name).")  # fmt: skip
def batch_command(
    stack: str,
    service: str,
    input_path: Path,
    output: Path,
    concurrency: int,
    max_retries: int,
    timeout: float,
    retry_failed: bool,
    allow_failures: bool,
    quiet: bool,
    via: str | None = None,
) -> None:
    """Send the OpenAI-format batch INPUT.jsonl (what `vllm run-batch` reads) to SERVICE of
    the running STACK; write one result line per request to OUTPUT.

    Run it again after an interruption to resume: done lines are skipped. Invalid input lines
    go to OUTPUT's .errors.jsonl file. Exits 6 if any line failed or was invalid.
    """
    options = BatchOptions(
        concurrency=concurrency, max_retries=max_retries, timeout=timeout, retry_failed=retry_failed
    )
    plan = deployed(stack).plan  # what runs (its deployment record), not today's stack file
    job = prepare_batch(plan, service, input_path, output, options)
    if via is not None or not job.service.published:
        from kit.gateway_probe import target_endpoint

        job.endpoint = target_endpoint(plan, job.service, via)
    err = console(stderr=True)
    for note in job.notes:
        err.print(f"note: {note}", markup=False, soft_wrap=True)
    label = f"{job.service.name} ({job.service.served_name})"
    try:
        summary = run_batch(job, BatchProgress(err, label, quiet=quiet))
    except BatchInterrupted as exc:
        print_summary(err, exc.summary)
        raise
    print_summary(console(), summary)
    if not summary.ok and not allow_failures:
        bad = summary.failed + summary.failed_before + summary.invalid
        raise CheckFailed(
            f"batch: {bad} of {summary.requests + summary.invalid} lines failed or were invalid",
            hint="see the error lines in the output (and the .errors.jsonl file); "
            "--allow-failures exits 0 anyway",
        )
