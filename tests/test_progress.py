"""The plain progress display (logs, CI): a line per phase change and a periodic summary."""

from __future__ import annotations

import io
import re

from rich.console import Console

from kit.plan import build_plan
from kit.progress import Display
from kit.readiness import Phase, ServiceProgress
from kit.spec import load_stack


def test_plain_lines_and_heartbeat_use_time_in_phase():
    plan = build_plan(load_stack("sim-demo"))
    buf = io.StringIO()
    display = Display(Console(file=buf, width=200, force_terminal=False))
    progress = [ServiceProgress(s) for s in plan.services]
    llm = progress[0]
    llm.phase, llm.phase_since, llm.started_at = Phase.LOADING, 2.0, 1.0
    display(2.0, progress, llm)
    display(40.0, progress, None)  # heartbeat after 30 s
    text = buf.getvalue()
    assert "[    2.0s] llm: loading: port closed" in text
    assert "still waiting: llm loading: port closed for 38s" in text
    assert "embed waiting for GPU sharers for 40s" in text
    assert not re.search(r"for -\d", text), "time in phase is never negative"
