"""What ``kit pull`` shows while it downloads: each file and the whole pull, with rate and ETA.

On a terminal: live bars (overall plus one per file in flight). Elsewhere (logs, CI): a line
when a file starts (with the offset it resumes from), a line when it is verified (size, time,
rate), a line for each retry, and an overall line every ``HEARTBEAT_S`` seconds.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

HEARTBEAT_S = 10.0


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def duration(s: float) -> str:
    s = int(s)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class PullDisplay:
    """A :class:`kit.pull.PullListener` drawing progress; use as a context manager."""

    def __init__(self, console: Console, *, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.console = console
        self.live = console.is_terminal
        self._clock = clock
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._overall: TaskID | None = None
        self._tasks: dict[str, TaskID] = {}
        self.total = 0
        self.done = 0
        self._started = 0.0
        self._last_beat = 0.0

    def __enter__(self) -> PullDisplay:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.finish()

    # --- listener --------------------------------------------------------------------------

    def message(self, text: str) -> None:
        with self._lock:
            self._print(text)

    def start(self, total_bytes: int, files: int) -> None:
        with self._lock:
            self.total, self.done = total_bytes, 0
            self._started = self._last_beat = self._clock()
            if not files:
                return
            self._print(f"downloading {files} file{'s' if files != 1 else ''}, {size(total_bytes)}")
            if self.live:
                self._progress = Progress(
                    TextColumn("{task.description}", markup=False),
                    BarColumn(),
                    DownloadColumn(binary_units=True),
                    TransferSpeedColumn(),
                    TimeRemainingColumn(),
                    console=self.console,
                    transient=False,
                )
                self._progress.start()
                self._overall = self._progress.add_task("overall", total=total_bytes)

    def file_start(self, label: str, size_: int, offset: int) -> None:
        with self._lock:
            if self._progress is not None:
                if label not in self._tasks:
                    self._tasks[label] = self._progress.add_task(_short(label), total=size_,
                                                                 completed=offset)  # fmt: skip
                else:
                    self._progress.update(self._tasks[label], completed=offset)
                return
            resumed = f", resuming at {size(offset)}" if offset else ""
            self._print(f"  get   {label} ({size(size_)}{resumed})")

    def advance(self, label: str, n: int) -> None:
        with self._lock:
            self.done += n
            if self._progress is not None:
                if label in self._tasks:
                    self._progress.advance(self._tasks[label], n)
                if self._overall is not None:
                    self._progress.advance(self._overall, n)
                return
            now = self._clock()
            if now - self._last_beat >= HEARTBEAT_S:
                self._last_beat = now
                self._print(self.overall_line(now))

    def file_done(self, label: str, size_: int, downloaded: int, seconds: float) -> None:
        with self._lock:
            rate = downloaded / seconds if seconds > 0 else 0.0
            if self._progress is not None and label in self._tasks:
                self._progress.remove_task(self._tasks.pop(label))
            line = f"  ok    {label} ({size(size_)}, {size(downloaded)} in {seconds:.1f}s"
            line += f", {size(rate)}/s, checksum verified)"
            self._print(line)

    def file_retry(self, label: str, why: str) -> None:
        with self._lock:
            self._print(f"  retry {label}: {why}")

    def finish(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None

    # --- helpers ---------------------------------------------------------------------------

    def overall_line(self, now: float) -> str:
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = duration((self.total - self.done) / rate) if rate > 0 else "?"
        return (
            f"overall {size(self.done)} of {size(self.total)} ({pct:.1f}%), "
            f"{size(rate)}/s, ETA {eta}"
        )

    def _print(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)


def _short(label: str, width: int = 48) -> str:
    return label if len(label) <= width else "…" + label[-(width - 1) :]
