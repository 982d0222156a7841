"""A gateway (or Prometheus) that crashes while the engines load fails `kit up` at once, on the
in-memory engine double over fake time (kit.readiness.Waiter's ``watch``, lifecycle.up)."""

from __future__ import annotations

import pytest
import yaml
from fakeengine import NEVER, FakeClock, FakeEngine, Script

from kit import lifecycle, record
from kit.errors import NotReadyError
from kit.plan import build_plan
from kit.readiness import Phase, Waiter
from kit.spec import parse_stack

# what LiteLLM 1.106.12 prints when its config holds a bad value (measured on the real image)
BAD_CONFIG_LINE = (
    "ValueError: Invalid routing_strategy: 'no-such-strategy'. Valid options: ['simple-shuffle',"
    " 'least-busy']. Check 'router_settings.routing_strategy' in your config.yaml or the "
    "'routing_strategy' parameter if using the Router SDK directly."
)
GATEWAY_LOG = (
    (1.0, "INFO:     Started server process [1]"),
    (2.0, '  File "/opt/litellm/lib/python3.11/site-packages/litellm/router.py", line 1311'),
    (2.5, BAD_CONFIG_LINE),
    (2.5, "ERROR:    Application startup failed. Exiting."),
)
STACK = {
    "name": "gwwatch",
    "host": {"gpus": 4, "gpu_memory_gib": 80},
    "defaults": {"image": "vllm/vllm-openai:v0.11.0", "vllm_version": "0.11.0"},
    # a port in this test's own range: lifecycle.up checks it is free on the real network
    "gateway": {"port": 29521},
    "services": {
        "llm": {"kind": "chat", "model": "org/llm", "gpus": 1, "replicas": 2},
        "embed": {"kind": "embed", "model": "org/embed", "gpus": [2]},
    },
}
LOAD = 300.0  # seconds the engines take to load


@pytest.fixture
def plan(tmp_path):
    path = tmp_path / "gwwatch.yaml"
    path.write_text(yaml.safe_dump(STACK))
    return build_plan(parse_stack(path.read_text(), source=str(path), base_dir=tmp_path))


def engine_of(plan, clock, tmp_path, gateway: Script) -> FakeEngine:
    scripts = {s.name: Script(port_closed_for=LOAD) for s in plan.services}
    return FakeEngine(plan, clock, {**scripts, "gateway": gateway}, folder=tmp_path / "p")


def test_gateway_crash_fails_up_at_once_with_its_log_and_cause(plan, tmp_path):
    clock = FakeClock()
    engine = engine_of(plan, clock, tmp_path, Script(exit_after=3, log=GATEWAY_LOG))
    with pytest.raises(NotReadyError) as info:
        lifecycle.up(plan, engine, endpoints=engine.endpoints, clock=clock)
    assert clock.elapsed <= 3.5  # the next tick, not after the engines' 300 s
    msg = str(info.value)
    assert msg.startswith("service 'gateway': container exited (exit status 1)")
    assert "Application startup failed" in msg  # its last log lines
    assert info.value.cause == "gateway_config"
    assert "the gateway (LiteLLM) refused its configuration" in msg
    assert "Invalid routing_strategy" in msg.split("diagnosis:")[1]  # the telling line
    # nothing half-started: every container removed, no record
    assert "removed what was started" in msg
    assert engine.containers == {} and record.read(engine.folder) is None


def test_gateway_restart_while_engines_load_is_a_crash(plan, tmp_path):
    clock = FakeClock()
    engine = engine_of(plan, clock, tmp_path, Script(restart_after=4))
    with pytest.raises(NotReadyError, match=r"service 'gateway': container restarted"):
        lifecycle.up(plan, engine, endpoints=engine.endpoints, clock=clock, keep_on_failure=True)
    assert clock.elapsed <= 4.5
    dep = record.read(engine.folder)  # kept for debugging when asked
    assert dep is not None and dep.state == "failed"


def test_gateway_removed_by_someone_else_fails_the_wait(plan, tmp_path):
    clock = FakeClock()
    engine = engine_of(plan, clock, tmp_path, Script(disappear_after=5))
    engine.start(["gateway"])
    waiter = Waiter(engine, endpoints=engine.endpoints, clock=clock, watch=["gateway"])
    with pytest.raises(NotReadyError, match="gateway': its container disappeared"):
        waiter.run()
    assert clock.elapsed <= 5.5


def test_a_gateway_that_stays_up_does_not_stop_the_wait(plan, tmp_path):
    clock = FakeClock()
    engine = engine_of(plan, clock, tmp_path, Script(port_closed_for=NEVER))
    engine.start(["gateway"])
    result = Waiter(engine, endpoints=engine.endpoints, clock=clock, watch=["gateway"]).run()
    assert all(p.phase is Phase.READY for p in result.services)
    assert result.elapsed >= LOAD and "gateway" not in {p.name for p in result.services}


def test_an_engine_crash_is_still_reported_with_a_watched_gateway(plan, tmp_path):
    clock = FakeClock()
    engine = engine_of(plan, clock, tmp_path, Script(port_closed_for=NEVER))
    engine.scripts["embed"] = Script(exit_after=2, log=((1, "boom"),))
    engine.start(["gateway"])
    with pytest.raises(NotReadyError, match="service 'embed'"):
        Waiter(engine, endpoints=engine.endpoints, clock=clock, watch=["gateway"]).run()
