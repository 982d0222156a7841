"""Each known failure, as real vLLM logs it, gets its own diagnosis and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from kit.diagnose import CAUSES, diagnose

LOGS = Path(__file__).parent / "fixtures" / "vllm_logs"
# causes of a model over several hosts: real logs from the two-engine Ray tests (kit.hosts)
MULTINODE_LOGS = Path(__file__).parent / "fixtures" / "multinode_logs"
# the gateway's: the real LiteLLM 1.106.12 image refusing a config value (its last 45 lines)
GATEWAY_LOGS = Path(__file__).parent / "fixtures" / "gateway_logs"


@pytest.mark.parametrize("cause", [c.key for c in CAUSES])
def test_fixture_log_is_recognised(cause):
    path = LOGS / f"{cause}.log"
    if not path.exists():
        path = MULTINODE_LOGS / f"{cause}.log"
    log = (path if path.exists() else GATEWAY_LOGS / f"{cause}.log").read_text()
    d = diagnose(log)
    assert d.cause is not None and d.cause.key == cause, d
    assert d.line and d.line.strip() in log
    text = d.describe()
    assert d.cause.title in text and "fix:" in text


def test_unknown_log():
    d = diagnose("INFO starting\nSegmentation fault (core dumped)\n")
    assert d.cause is None
    assert "no known cause" in d.describe()


def test_free_memory_wins_over_a_later_oom():
    log = (LOGS / "free_memory.log").read_text() + (LOGS / "oom.log").read_text()
    assert diagnose(log).cause.key == "free_memory"
