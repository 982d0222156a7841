"""The start/wait loop (kit.readiness.Waiter) and lifecycle.up/down on the in-memory engine
double over fake time: no Docker, no network, no real waiting."""

from __future__ import annotations

import time

import pytest
import yaml
from fakeengine import NEVER, FakeClock, FakeEngine, Script

from kit import lifecycle, record
from kit.errors import EngineError, KitError, NotReadyError
from kit.plan import build_plan
from kit.readiness import Phase, Waiter
from kit.spec import parse_stack

OOM_LINE = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
    "total capacity of 79.19 GiB of which 1.20 GiB is free."
)

# an LLM on GPUs 0-3, and an embedding model and a reranker sharing GPU 4 (the plan makes
# the smaller one wait until the other is ready)
STACK = {
    "name": "fake",
    "host": {"gpus": 8, "gpu_memory_gib": 80},
    "defaults": {"image": "vllm/vllm-openai:v0.11.0", "vllm_version": "0.11.0"},
    "services": {
        "llm": {
            "kind": "chat",
            "model": "org/llm",
            "gpus": [0, 1, 2, 3],
            "port": 9001,
            "startup_timeout": 120,
        },
        "embed": {
            "kind": "embed",
            "model": "org/embed",
            "gpus": [4],
            "port": 9002,
            "gpu_memory_utilization": 0.3,
        },
        "rerank": {
            "kind": "rerank",
            "model": "org/rerank",
            "gpus": [4],
            "port": 9003,
            "gpu_memory_utilization": 0.2,
        },
    },
}


@pytest.fixture
def plan(tmp_path):
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(STACK))
    stack = parse_stack(path.read_text(), source=str(path), base_dir=tmp_path)
    return build_plan(stack)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make(plan, clock, tmp_path):
    def make(**scripts: Script) -> FakeEngine:
        return FakeEngine(plan, clock, scripts, folder=tmp_path / "project")

    return make


class Events:
    """A listener that keeps every phase change as (seconds, service, phase)."""

    def __init__(self) -> None:
        self.changes: list[tuple[float, str, Phase]] = []
        self.ticks = 0

    def __call__(self, elapsed, services, changed) -> None:
        if changed is None:
            self.ticks += 1
        else:
            self.changes.append((elapsed, changed.name, changed.phase))

    def phases(self, service: str) -> list[Phase]:
        return [ph for _, n, ph in self.changes if n == service]

    def first(self, service: str, phase: Phase) -> float:
        return next(t for t, n, ph in self.changes if n == service and ph is phase)


def wait(engine: FakeEngine, clock: FakeClock, **kw) -> tuple[object, Events]:
    events = Events()
    result = Waiter(engine, endpoints=engine.endpoints, clock=clock, listener=events, **kw).run()
    return result, events


def test_gpu_sharers_start_one_after_the_other(plan, make, clock):
    assert plan.service("rerank").depends_on == ("embed",)
    engine = make(
        llm=Script(created_for=0.5, port_closed_for=8, unhealthy_for=2, unlisted_for=1),
        embed=Script(port_closed_for=3),
        rerank=Script(port_closed_for=3),
    )
    t0 = time.perf_counter()
    result, events = wait(engine, clock)
    assert time.perf_counter() - t0 < 1.0  # 11.5 simulated seconds, no real waiting
    by = {p.name: p for p in result.services}
    assert all(p.phase is Phase.READY for p in result.services)

    # llm and embed start at once; rerank only when embed is ready, not before
    assert engine.started_at("llm") == engine.started_at("embed") == 0
    assert by["rerank"].started_at == engine.started_at("rerank")
    assert engine.started_at("rerank") >= events.first("embed", Phase.READY)
    assert engine.started_at("rerank") - events.first("embed", Phase.READY) <= 0.25  # next tick
    assert not [p for p in engine.endpoints.probes if p[1] == "rerank" and p[0] < 3]

    # each phase in order, as the script has it
    assert events.phases("llm") == [
        Phase.CREATED,
        Phase.STARTING,
        Phase.LOADING,
        Phase.UNHEALTHY,
        Phase.HEALTHY,
        Phase.READY,
    ]
    assert events.phases("rerank")[0] is Phase.CREATED
    assert 11.5 <= by["llm"].ready_at <= 11.75
    assert 3 <= by["embed"].ready_at <= 3.25
    assert 6 <= by["rerank"].ready_at <= 6.5
    assert result.elapsed == by["llm"].ready_at
    # a tick per 0.25 s of fake time
    assert clock.sleeps == pytest.approx(result.elapsed / 0.25, abs=1)


def test_already_running_stack_is_ready_at_once(make, clock):
    engine = make()
    wait(engine, clock)
    ids = {k: v.id for k, v in engine.states().items()}
    result, _ = wait(engine, clock)
    # ready within two ticks (rerank's turn comes once embed is seen ready): nothing restarted
    assert result.elapsed <= 0.25
    assert {k: v.id for k, v in engine.states().items()} == ids


def test_crash_while_loading_is_diagnosed_from_the_log(make, clock):
    engine = make(
        llm=Script(
            port_closed_for=60,
            exit_after=2,
            exit_code=1,
            log=((0, "INFO Starting vLLM API server"), (1.5, OOM_LINE)),
        )
    )
    with pytest.raises(NotReadyError) as info:
        wait(engine, clock)
    msg = str(info.value)
    assert "service 'llm': container exited (exit status 1) while loading" in msg
    assert "| INFO Starting vLLM API server" in msg and OOM_LINE in msg
    assert "diagnosis: CUDA out of memory" in msg and "fix:" in msg
    assert info.value.cause == "oom" and info.value.service == "llm"
    assert 2 <= clock.elapsed <= 2.25


def test_exit_0_after_ready_is_a_failure(make, clock):
    # embed is ready after 1 s and its process ends cleanly at 4 s while the LLM still loads:
    # vLLM exits 0 when its engine dies, so any exit counts
    engine = make(
        llm=Script(port_closed_for=30),
        embed=Script(port_closed_for=1, exit_after=4, exit_code=0),
    )
    with pytest.raises(NotReadyError) as info:
        wait(engine, clock)
    assert "service 'embed': container exited (exit status 0) after it was ready" in str(info.value)
    assert "no known cause recognised" in str(info.value)
    assert info.value.cause is None


def test_restart_is_a_crash(make, clock):
    engine = make(
        embed=Script(port_closed_for=10, restart_after=2, log=((1, "RuntimeError: boom"),))
    )
    with pytest.raises(NotReadyError) as info:
        wait(engine, clock)
    assert "service 'embed': container restarted (1 restarts): it crashed" in str(info.value)
    assert "RuntimeError: boom" in str(info.value)


def test_container_removed_by_someone_else(make, clock):
    engine = make(llm=Script(port_closed_for=10, disappear_after=3))
    with pytest.raises(NotReadyError, match="its container disappeared"):
        wait(engine, clock)


@pytest.mark.parametrize(
    ("script", "phase"),
    [
        (Script(port_closed_for=NEVER), "loading: port closed"),
        (Script(port_closed_for=1, unhealthy_for=NEVER), "loading: /health not 200"),
        (Script(port_closed_for=1, unlisted_for=NEVER), "healthy: model not listed"),
        (Script(created_for=NEVER), "created"),
    ],
)
def test_timeout_names_the_phase_it_stuck_in(make, clock, script, phase):
    engine = make(llm=script)
    t0 = time.perf_counter()
    with pytest.raises(NotReadyError) as info:
        wait(engine, clock, timeout=300)
    assert time.perf_counter() - t0 < 1.0  # five simulated minutes
    assert f"service 'llm': not ready after 300s (phase: {phase})" in str(info.value)
    assert "diagnosis" not in str(info.value)  # a timeout with no known cause in the log
    assert 300 < clock.elapsed <= 300.5


def test_startup_timeout_of_the_plan_applies(plan, make, clock):
    # without --timeout, each service's own budget from the plan counts
    budget = plan.service("llm").startup_timeout
    engine = make(llm=Script(port_closed_for=NEVER, log=((5, OOM_LINE),)))
    with pytest.raises(NotReadyError) as info:
        wait(engine, clock)
    assert f"not ready after {budget}s" in str(info.value)
    assert info.value.cause == "oom"  # a known cause in the log is shown after a timeout too


# --- lifecycle.up / down on the double ------------------------------------------------------


def up(plan, engine, clock, **kw):
    return lifecycle.up(plan, engine, endpoints=engine.endpoints, clock=clock, **kw)


def test_up_records_what_it_deployed_and_down_removes_it(plan, make, clock):
    engine = make()
    up(plan, engine, clock)
    dep = record.read(engine.folder)
    assert dep is not None and dep.state == "ready" and dep.plan == plan
    lifecycle.down(engine)
    assert engine.containers == {}
    assert record.read(engine.folder) is None
    lifecycle.down(engine)  # nothing runs: still fine


def test_ctrl_c_during_up_removes_what_it_started(plan, make, clock):
    engine = make(llm=Script(port_closed_for=60))
    clock.interrupt_at = 5.0
    with pytest.raises(KitError) as info:
        up(plan, engine, clock)
    assert "interrupted: removed what was started" in str(info.value)
    assert engine.actions().count("down") == 1 and engine.containers == {}
    assert record.read(engine.folder) is None  # a failed up leaves no record


def test_ctrl_c_with_keep_on_failure_keeps_containers_and_record(plan, make, clock):
    engine = make(llm=Script(port_closed_for=60))
    clock.interrupt_at = 5.0
    with pytest.raises(KitError) as info:
        up(plan, engine, clock, keep_on_failure=True)
    assert "interrupted: kept for debugging: `kit logs fake`, then `kit down fake`" in str(
        info.value
    )
    assert "down" not in engine.actions()
    assert set(engine.states()) == {"llm", "embed", "rerank"}
    dep = record.read(engine.folder)  # `kit logs` and `kit down` must still find what runs
    assert dep is not None and dep.state == "failed" and dep.detail == "interrupted"


def test_crash_during_up_removes_containers_and_record(plan, make, clock):
    engine = make(rerank=Script(exit_after=1, log=((0.5, OOM_LINE),)))
    with pytest.raises(NotReadyError) as info:
        up(plan, engine, clock)
    assert "removed what was started" in str(info.value)
    assert engine.containers == {} and record.read(engine.folder) is None


def test_failed_removal_is_reported_and_the_record_kept(plan, make, clock):
    engine = make(llm=Script(exit_after=1))
    engine.fail_down = "docker compose down failed for 'fake': boom"
    with pytest.raises(NotReadyError) as info:
        up(plan, engine, clock)
    assert "could not remove it: docker compose down failed" in str(info.value)
    dep = record.read(engine.folder)
    assert dep is not None and dep.state == "failed"


def test_preflight_refuses_before_anything_starts(plan, clock, tmp_path):
    engine = FakeEngine(plan, clock, folder=tmp_path / "p", unavailable="the engine is off")
    with pytest.raises(EngineError, match="the engine is off"):
        up(plan, engine, clock)
    engine = FakeEngine(plan, clock, folder=tmp_path / "p", taken_ports=[9002])
    with pytest.raises(KitError, match=r"ports already in use by something else: embed"):
        up(plan, engine, clock)
    assert "start" not in engine.actions() and record.read(engine.folder) is None


def test_status_rows_from_the_double(plan, make, clock):
    engine = make(rerank=Script(port_closed_for=NEVER))
    with pytest.raises(NotReadyError):
        up(plan, engine, clock, keep_on_failure=True, timeout=5)
    rows = {r.name: r for r in lifecycle.status(plan, engine, endpoints=engine.endpoints)}
    assert rows["llm"].served == "listed" and rows["llm"].visible_devices == "0,1,2,3"
    assert rows["llm"].health == "healthy" and rows["llm"].url == "http://127.0.0.1:9001"
    assert rows["rerank"].served == "port closed" and rows["rerank"].health == "starting"


# --- the Docker-backed engine with an injected python-on-whales client ----------------------


class StubCompose:
    """Records what kit.engine.Project asks python-on-whales' compose for."""

    def __init__(self, containers=(), fail: str | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.containers = list(containers)
        self.fail = fail

    def _call(self, name: str, kw: dict):
        from python_on_whales.exceptions import DockerException

        self.calls.append((name, kw))
        if self.fail:
            raise DockerException(["docker", "compose", name], 1, stderr=self.fail.encode())

    def up(self, **kw):
        self._call("up", kw)

    def down(self, **kw):
        self._call("down", kw)

    def ps(self, **kw):
        self._call("ps", kw)
        return self.containers


def stub_container(service: str, status: str, *, exit_code=0, restarts=0, health=None):
    from types import SimpleNamespace as NS

    return NS(
        id=f"id-{service}",
        config=NS(labels={"com.docker.compose.service": service}),
        state=NS(status=status, exit_code=exit_code, health=NS(status=health) if health else None),
        restart_count=restarts,
    )


def test_project_drives_the_injected_docker_client(plan, tmp_path, monkeypatch):
    from types import SimpleNamespace as NS

    from kit.engine import Engine, Project

    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    compose = StubCompose(
        [
            stub_container("llm", "running", health="healthy"),
            stub_container("embed", "exited", exit_code=137, restarts=2),
            NS(id="x", config=NS(labels={}), state=None, restart_count=0),  # not a service
        ]
    )
    project: Engine = Project(plan, client=NS(compose=compose))
    project.start(["llm", "embed"])
    assert project.folder == tmp_path / "state" / "projects" / "fake"
    assert (project.folder / "docker-compose.yml").is_file()  # written before compose runs
    assert compose.calls[0] == (
        "up",
        {
            "services": ["llm", "embed"],
            "detach": True,
            "dependencies": False,
            "quiet": True,
            "color": False,
        },
    )
    states = project.states()
    assert set(states) == {"llm", "embed"}
    assert states["llm"].status == "running" and states["llm"].health == "healthy"
    assert states["embed"].stopped and states["embed"].exit_code == 137
    assert states["embed"].restart_count == 2 and states["embed"].health is None
    project.down(volumes=True)
    assert compose.calls[-1] == (
        "down",
        {"remove_orphans": True, "volumes": True, "timeout": 30, "quiet": True},
    )

    failing = Project(plan, client=NS(compose=StubCompose(fail="Error: no such image")))
    with pytest.raises(EngineError, match="docker compose start failed for 'fake': Error: no such"):
        failing.start(["llm"])
    with pytest.raises(EngineError, match="docker compose ps failed"):
        failing.states()


def test_engine_available_with_an_injected_client():
    from types import SimpleNamespace as NS

    from python_on_whales.exceptions import DockerException

    from kit.engine import engine_available

    def info():
        raise DockerException(["docker", "info"], 1, stderr=b"Cannot connect to the Docker daemon")

    assert engine_available(NS(system=NS(info=lambda: {}))) is None
    why = engine_available(NS(system=NS(info=info)))
    assert why == "the Docker engine does not answer: Cannot connect to the Docker daemon"
