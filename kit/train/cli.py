"""``kit train STACK JOB`` and ``kit eval STACK --models A,B --data FILE``: the commands and
their displays. Registered lazily on the ``kit`` group (:data:`kit.cli.LAZY_COMMANDS`).
"""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kit.report import console, relative_path
from kit.train.progress import TrainProgress

#: seconds between plain progress lines when the output is not a terminal
HEARTBEAT_S = 10.0


class TrainDisplay:
    """A :class:`kit.train.runner.TrainListener`: a live line on a terminal; elsewhere a plain
    line for every logged step, at most one per ``HEARTBEAT_S`` (and always the last)."""

    def __init__(self, out: Console) -> None:
        self.out = out
        self.t0 = time.monotonic()
        self.live: Live | None = None
        self.last_line = 0.0

    def __enter__(self) -> TrainDisplay:
        if self.out.is_terminal:
            self.live = Live(console=self.out, refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)
            self.live = None

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self.t0:8.1f}s]"

    def message(self, text: str) -> None:
        self.out.print(f"{self._stamp()} {text}", markup=False, soft_wrap=True, highlight=False)

    def progress(self, p: TrainProgress, entry: bool) -> None:
        if self.live is not None:
            self.live.update(Text(f"{self._stamp()} {p.line()}"))
            return
        now = time.monotonic()
        last = p.step >= p.total and entry
        if entry and (now - self.last_line >= HEARTBEAT_S or last or len(p.history) == 1):
            self.last_line = now
            self.message(p.line())


@click.command("train")
@click.argument("stack")
@click.argument("job")
@click.option(
    "--preempt",
    is_flag=True,
    help="Stop running services on the job's GPUs for the job; restore them after.",
)
@click.option("--resume", is_flag=True, help="Continue from the job's last checkpoint.")
@click.option(
    "--image",
    metavar="IMAGE",
    help="Replace the job's image (tests: the locally built CPU training image).",
)
@click.option(
    "--results",
    "results_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("results"),
    show_default=True,
)
@click.option(
    "--timeout",
    type=float,
    metavar="SECONDS",
    help="Start-up budget per restored service (default: its own).",
)
def train_command(stack: str, job: str, preempt: bool, resume: bool, image: str | None,
                  results_dir: Path, timeout: float | None) -> None:  # fmt: skip
    """Run training JOB of STACK (sft, dpo or distill) and serve its adapter."""
    from kit.train.runner import TrainOptions, run_train

    out = console()
    if image:
        out.print(f"IMAGE OVERRIDE (tests): the job runs {image}", style="bold yellow")
    opts = TrainOptions(preempt=preempt, resume=resume, image=image, results_dir=results_dir,
                        timeout=timeout)  # fmt: skip
    with TrainDisplay(out) as display:
        result = run_train(stack, job, opts, display)
    p = result.progress
    losses = [e["loss"] for e in p.history if isinstance(e.get("loss"), float)]
    loss = f"loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "no loss logged"
    out.print(
        f"job '{job}' done: {p.step} steps in {result.timings.get('train_s', 0):.1f}s, {loss}; "
        f"adapter {result.job.output} (sha256 {result.sha256[:12]})",
        style="bold green", markup=False, soft_wrap=True,
    )  # fmt: skip
    out.print(f"results: {relative_path(str(result.run_dir))}", soft_wrap=True)


@click.command("eval")
@click.argument("stack")
@click.option(
    "--models",
    required=True,
    metavar="A,B,...",
    help="Served names or adapter names of the running stack.",
)
@click.option(
    "--data",
    "data",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help='Held-out JSONL: {"prompt": "...", "expected": "..."} per line.',
)
@click.option(
    "--metric",
    type=click.Choice(["contains", "startswith", "exact"]),
    default="contains",
    show_default=True,
)
@click.option("--max-tokens", type=int, default=64, show_default=True)
@click.option(
    "--show",
    type=int,
    default=5,
    show_default=True,
    help="Held-out prompts shown with each model's answer.",
)
@click.option(
    "--results",
    "results_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("results"),
    show_default=True,
)
def eval_command(stack: str, models: str, data: Path, metric: str, max_tokens: int, show: int,
                 results_dir: Path) -> None:  # fmt: skip
    """Answer held-out prompts with several models; compare them on one metric."""
    from kit.eval import run_eval
    from kit.record import deployed

    plan = deployed(stack).plan
    names = [m.strip() for m in models.split(",") if m.strip()]
    result = run_eval(plan, names, data, metric=metric, max_tokens=max_tokens,
                      results_dir=results_dir)  # fmt: skip
    out = console()
    t = Table(title=f"eval on {data.name}: metric '{metric}' against each line's expected",
              box=box.SIMPLE_HEAD, title_justify="left")  # fmt: skip
    for col in ("model", "service", "answered", metric, "rate"):
        t.add_column(col)
    for s in result.scores:
        t.add_row(s.model, s.service, f"{s.answered}/{s.total}", f"{s.hits}/{s.total}",
                  f"{s.rate:.0%}")  # fmt: skip
    out.print(t)
    if show:
        a = Table(box=box.SIMPLE_HEAD, title="answers (first lines)", title_justify="left")
        a.add_column("prompt")
        for m in names:
            a.add_column(m)
        for row in result.rows[:show]:
            cells = [f"{'+' if row[m]['hit'] else '-'} {row[m]['answer'][:60]}" for m in names]
            a.add_row(row["prompt"][:40], *cells)
        out.print(a)
    out.print(f"results: {relative_path(str(result.folder))}", soft_wrap=True)
