"""Live progress of a training job, read from the trainer's own log.

transformers' Trainer prints a tqdm bar (``16/30 [00:18<00:15, 1.10s/it]``: step, total,
elapsed, ETA) and, every ``logging_steps``, the logged metrics as a Python dict
(``{'loss': '0.3459', 'learning_rate': '0.0015', 'num_tokens': '3192', ...}``). The parser
reads both from the container's log stream (``\\r`` and ``\\n`` both end a piece), keeps the
latest step, and turns each metrics dict into a log-history entry with the step it belongs to.
Tokens per second come from ``num_tokens`` between two entries.
"""

from __future__ import annotations

import ast
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_BAR = re.compile(r"(\d+)/(\d+) \[([0-9:]+)<([0-9:?]+)")
_DICT = re.compile(r"(\{'[A-Za-z_]+': .*\})\s*$")


def _seconds(text: str) -> float | None:
    if "?" in text:
        return None
    total = 0.0
    for part in text.split(":"):
        total = total * 60 + float(part)
    return total


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


@dataclass
class TrainProgress:
    """What the job has done so far; times are seconds since the container started."""

    total: int
    step: int = 0
    loss: float | None = None
    learning_rate: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    elapsed: float = 0.0
    #: every metrics entry, with ``step`` (and ``time``: seconds since start)
    history: list[dict[str, Any]] = field(default_factory=list)
    #: the final summary entry (train_runtime, train_loss, ...), when the trainer printed it
    summary: dict[str, Any] | None = None
    nan_loss: bool = False

    def line(self) -> str:
        parts = [f"step {self.step}/{self.total}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.learning_rate is not None:
            parts.append(f"lr {self.learning_rate:.2e}")
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:,.0f} tokens/s")
        if self.eta_s is not None:
            parts.append(f"ETA {_clock(self.eta_s)}")
        return "  ".join(parts)


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 60}:{s % 60:02d}" if s >= 60 else f"{s}s"


class LogParser:
    """Feed it the container's output; it updates a :class:`TrainProgress`."""

    def __init__(
        self,
        progress: TrainProgress,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[TrainProgress, bool], None] | None = None,
    ) -> None:
        self.progress = progress
        self.clock = clock
        self.t0 = clock()
        self.on_change = on_change or (lambda p, entry: None)
        self._buf = ""
        self._last_tokens: tuple[float, float] | None = None
        #: step and time of the first metrics entry (for the ETA)
        self._first: tuple[int, float] | None = None
        self._entry_step = progress.step

    def feed(self, data: bytes | str) -> None:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        self._buf += text
        pieces = re.split(r"[\r\n]", self._buf)
        self._buf = pieces.pop()
        for piece in pieces:
            self._piece(piece)

    def close(self) -> None:
        if self._buf:
            self._piece(self._buf)
            self._buf = ""

    def _piece(self, piece: str) -> None:
        p = self.progress
        p.elapsed = self.clock() - self.t0
        m = _DICT.search(piece)
        if m:
            try:
                raw = ast.literal_eval(m[1])
            except (ValueError, SyntaxError):
                raw = None
            if isinstance(raw, dict):
                self._entry({str(k): _number(v) for k, v in raw.items()})
                return
        bars = _BAR.findall(piece)
        if bars:
            step, total, _, eta = bars[-1]
            changed = int(step) > p.step
            if changed:
                p.step = int(step)
                p.eta_s = _seconds(eta) if self._first is None else p.eta_s
            p.total = int(total) or p.total
            if changed:
                self.on_change(p, False)

    def _entry(self, entry: dict[str, Any]) -> None:
        p = self.progress
        if "train_runtime" in entry:
            p.summary = entry
            self.on_change(p, False)
            return
        # the trainer logs every step (logging_steps: 1), so entries count the steps; its bar
        # is redrawn less often and on another stream (stderr), so it only shows progress
        step = self._entry_step + 1
        self._entry_step = p.step = step
        if self._first is None:
            self._first = (step, p.elapsed)
        elif step > self._first[0] and p.elapsed > self._first[1]:
            per_step = (p.elapsed - self._first[1]) / (step - self._first[0])
            p.eta_s = max(0.0, (p.total - step) * per_step)
        entry = {"step": step, "time": round(p.elapsed, 3), **entry}
        loss = entry.get("loss")
        if isinstance(loss, float):
            p.loss = loss
            if math.isnan(loss) or math.isinf(loss):
                p.nan_loss = True
        lr = entry.get("learning_rate")
        if isinstance(lr, float):
            p.learning_rate = lr
        tokens = entry.get("num_tokens")
        if isinstance(tokens, float):
            if self._last_tokens is not None and p.elapsed > self._last_tokens[1]:
                p.tokens_per_s = (tokens - self._last_tokens[0]) / (
                    p.elapsed - self._last_tokens[1]
                )
            self._last_tokens = (tokens, p.elapsed)
        p.history.append(entry)
        self.on_change(p, True)
