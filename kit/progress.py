"""Showing what each service is doing while the kit waits.

On a terminal: a live table redrawn in place. Elsewhere (logs, CI, pipes): one plain line per
phase change, and a summary line every ``HEARTBEAT_S`` so a long load never looks hung.
"""

from __future__ import annotations

from types import TracebackType

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from kit.readiness import Phase, ServiceProgress
from kit.service_plan import gpu_ids

HEARTBEAT_S = 30.0

_STYLE = {
    Phase.READY: "green",
    Phase.FAILED: "bold red",
    Phase.HEALTHY: "cyan",
    Phase.WAITING: "dim",
}


class Display:
    """A :data:`kit.readiness.Listener` that draws progress. Use as a context manager."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self._live: Live | None = None
        self._last_beat = 0.0

    def __enter__(self) -> Display:
        if self.live:
            self._live = Live(console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def __call__(
        self, elapsed: float, services: list[ServiceProgress], changed: ServiceProgress | None
    ) -> None:
        if self._live is not None:
            self._live.update(table(elapsed, services))
            return
        if changed is not None:
            detail = f" ({changed.detail})" if changed.detail else ""
            self.console.print(
                f"[{elapsed:7.1f}s] {changed.name}: {changed.phase.value}{detail}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        elif elapsed - self._last_beat >= HEARTBEAT_S:
            self._last_beat = elapsed
            waiting = [p for p in services if p.phase is not Phase.READY]
            if waiting:
                parts = ", ".join(
                    f"{p.name} {p.phase.value} for {elapsed - p.phase_since:.0f}s" for p in waiting
                )
                self.console.print(
                    f"[{elapsed:7.1f}s] still waiting: {parts}", markup=False, soft_wrap=True
                )


def table(elapsed: float, services: list[ServiceProgress]) -> Table:
    t = Table(
        title=f"waiting for {sum(p.phase is not Phase.READY for p in services)} of "
        f"{len(services)} services, {elapsed:.0f}s",
        box=box.SIMPLE_HEAD,
        title_justify="left",
    )
    for col in ("service", "kind", "GPUs", "phase", "for", "detail"):
        t.add_column(col)
    for p in services:
        t.add_row(
            p.name,
            p.service.kind,
            gpu_ids(p.service.gpus),
            f"[{_STYLE.get(p.phase, 'yellow')}]{p.phase.value}[/]",
            f"{elapsed - p.phase_since:.0f}s",
            p.detail,
        )
    return t
