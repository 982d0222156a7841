"""``kit top STACK``: a live view of every engine of a running stack, per service and replica,
from their ``/metrics`` (:mod:`kit.observe`): requests running and waiting, KV-cache usage,
generated tokens/s and TTFT (p50 from the histogram, over the last interval), preemptions."""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from kit.engine import Engine
from kit.observe import Sample, Scraper, engines, rates
from kit.service_plan import gpu_ids
from kit.stack_plan import Plan


@dataclass(frozen=True)
class Row:
    service: str
    container: str
    gpus: str
    running: float | None
    waiting: float | None
    kv_cache_pct: float | None
    generation_tps: float | None
    ttft_p50_ms: float | None
    ttft_mean_ms: float | None
    preempted: float | None
    up: bool


def rows(
    plan: Plan, before: dict[str, Sample | None], after: dict[str, Sample | None]
) -> list[Row]:
    out = []
    for s in engines(plan):
        a, b = before.get(s.name), after.get(s.name)
        r = rates(a, b) if a is not None and b is not None else None
        out.append(
            Row(
                service=s.replica_of or s.name,
                container=s.name,
                gpus=gpu_ids(s.gpus),
                running=b.running if b else None,
                waiting=b.waiting if b else None,
                kv_cache_pct=100 * b.kv_cache_usage if b and b.kv_cache_usage is not None else None,
                generation_tps=r.generation_tps if r else None,
                ttft_p50_ms=r.ttft_p50_ms if r else None,
                ttft_mean_ms=r.ttft_mean_ms if r else None,
                preempted=r.preempted if r else None,
                up=b is not None,
            )
        )
    return out


def _f(v: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def table(plan: Plan, data: list[Row], interval: float) -> Table:
    t = Table(
        title=f"stack '{plan.stack.name}': engines' /metrics, rates over the last {interval:g}s "
        f"(vLLM {plan.stack.defaults.vllm_version})",
        box=box.SIMPLE_HEAD,
        title_justify="left",
    )
    for col in ("service", "container", "GPUs", "running", "waiting", "KV cache %",
                "gen tok/s", "TTFT p50 ms", "TTFT mean ms", "preempted"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("service", "container", "GPUs") else "right")
    for r in data:
        if not r.up:
            t.add_row(r.service, r.container, r.gpus, "[red]no /metrics[/]", *["-"] * 6)
            continue
        t.add_row(r.service, r.container, r.gpus, _f(r.running), _f(r.waiting),
                  _f(r.kv_cache_pct, "{:.1f}"), _f(r.generation_tps, "{:.1f}"),
                  _f(r.ttft_p50_ms), _f(r.ttft_mean_ms), _f(r.preempted))  # fmt: skip
    return t


def scrape_all(scraper: Scraper, plan: Plan) -> dict[str, Sample | None]:
    return {s.name: scraper.scrape(s) for s in engines(plan)}


def run(
    plan: Plan,
    project: Engine,
    console: Console,
    *,
    interval: float = 2.0,
    iterations: int | None = None,
) -> list[Row]:
    """Redraw every ``interval`` seconds (``iterations`` times, or until Ctrl-C); returns the
    last rows. Without a terminal, one table per interval is printed."""
    scraper = Scraper(plan, project)
    before = scrape_all(scraper, plan)
    last: list[Row] = []
    n = 0
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None
    try:
        if live is not None:
            live.start()
        while iterations is None or n < iterations:
            time.sleep(interval)
            after = scrape_all(scraper, plan)
            last = rows(plan, before, after)
            view = table(plan, last, interval)
            if live is not None:
                live.update(view, refresh=True)
            else:
                console.print(view)
            before = after
            n += 1
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
    return last
