"""kit.multinode_watch: which part of a model over several hosts was lost, the diagnosis, the
teardown on every host (the other services untouched), the record and `kit status`'s notes.
Every host's engine is a fake (:class:`FakeHosts`); the Docker tier is in
tests/integration/test_watch_two_engines.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from kit import multinode_watch as mw
from kit import record
from kit.cli import cli
from kit.engine import ContainerState
from kit.errors import EngineError
from kit.plan import build_plan
from kit.spec import parse_stack

HEAD_LOG = (
    "INFO rank 0 in world size 4 is assigned as DP rank 0, PP rank 0, TP rank 0\n"
    "ERROR [gloo] node 1 (ranks 2, 3) is gone: Connection closed by peer [127.0.0.1]:29501\n"
)


def stack_data() -> dict[str, Any]:
    return {
        "name": "mw",
        "hosts": {
            "a": {"gpus": 3, "gpu_memory_gib": 80, "address": "10.0.0.1"},
            "b": {
                "gpus": 3,
                "gpu_memory_gib": 80,
                "address": "10.0.0.2",
                "docker": "tcp://10.0.0.2:2376",
                "bind_address": "10.0.0.2",
            },
        },
        "defaults": {"image": "vllm/vllm-openai:v0.32.0"},
        "services": {
            "big": {
                "kind": "chat",
                "model": "org/big",
                "hosts": ["a", "b"],
                "gpus": [0, 1],
                "tensor_parallel_size": 2,
                "pipeline_parallel_size": 2,
                "port": 9000,
            },
            "embed": {
                "kind": "embed",
                "model": "org/embed",
                "host": "b",
                "gpus": [2],
                "port": 9001,
            },
        },
    }


@pytest.fixture
def plan():  # type: ignore[no-untyped-def]
    return build_plan(parse_stack(yaml.safe_dump(stack_data()), base_dir="."))


def st(service: str, status: str = "running", code: int | None = None) -> ContainerState:
    return ContainerState(service, f"id-{service}", status, code, 0, None)


class FakeHosts:
    """Every host's engine in memory: containers by host, engines that do not answer."""

    def __init__(self) -> None:
        self.containers: dict[str, dict[str, ContainerState]] = {
            "a": {"big": st("big")},
            "b": {"big-node1": st("big-node1"), "embed": st("embed")},
        }
        self.down: dict[str, str] = {}
        self.oom: set[str] = set()
        self.finished: dict[str, str] = {}
        self.removed: list[tuple[str, list[str]]] = []
        self.logs_of: list[str] = []

    def states(self, host: str) -> dict[str, ContainerState]:
        if host in self.down:
            raise EngineError(f"host '{host}': {self.down[host]}")
        return dict(self.containers[host])

    def details(self, host: str, container_id: str) -> tuple[str, bool, str]:
        name = container_id.removeprefix("id-")
        return f"mw-{name}-1", name in self.oom, self.finished.get(name, "")

    def logs(self, part: mw.Part) -> str:
        self.logs_of.append(part.name)
        return HEAD_LOG if part.rank == 0 else "worker log\n--- its head ---\n" + HEAD_LOG

    def remove(self, host: str, names: Sequence[str]) -> None:
        self.removed.append((host, list(names)))
        for n in names:
            self.containers[host].pop(n, None)

    def kill(self, host: str, name: str, code: int, at: str) -> None:
        self.containers[host][name] = st(name, "exited", code)
        self.finished[name] = at


def watcher(plan, hosts, **kw):  # type: ignore[no-untyped-def]
    said: list[str] = []
    w = mw.Watcher(plan, hosts, say=said.append, **kw)
    return w, said


def test_a_serving_service_is_left_alone(plan):
    hosts = FakeHosts()
    w, said = watcher(plan, hosts)
    assert w.check() == [] and w.check() == []
    assert hosts.removed == [] and said == []


def test_a_killed_worker_is_named_diagnosed_and_the_service_removed_on_every_host(plan):
    hosts = FakeHosts()
    # the worker was killed first; its head exited a moment later for want of it
    hosts.kill("b", "big-node1", 137, "2026-12-01T08:00:00.100000+00:00")
    hosts.kill("a", "big", 1, "2026-12-01T08:00:00.400000+00:00")
    w, said = watcher(plan, hosts)
    (td,) = w.check()
    assert (td.service, td.root.name, td.root.host, td.root.container) == (
        "big", "big-node1", "b", "mw-big-node1-1",
    )  # fmt: skip
    assert td.why == (
        "native worker big-node1 on host 'b' exited (exit status 137, killed by signal 9)"
    )
    assert td.cause == "node_lost"
    assert hosts.removed == [("a", ["big"]), ("b", ["big-node1"])]  # head first; embed stays
    assert "embed" in hosts.containers["b"]
    report = said[0]
    assert report.startswith(
        "service 'big': lost native worker big-node1 on host 'b': exited (exit status 137, "
        "killed by signal 9) while serving; then native head big on host 'a' exited (exit "
        "status 1)"
    )
    assert "    | ERROR [gloo] node 1 (ranks 2, 3) is gone" in report
    assert "diagnosis: a node of the model over several hosts was lost" in report
    assert said[1] == "service 'big': torn down on every host (a, b)"
    assert hosts.logs_of == ["big-node1"]
    # once torn down, it is not looked at again
    assert w.check() == [] and len(hosts.removed) == 2


def test_the_head_lost_first_is_the_root_even_when_a_worker_stops_too(plan):
    hosts = FakeHosts()
    hosts.kill("a", "big", 137, "2026-12-01T08:00:00.100000+00:00")
    hosts.oom.add("big")
    hosts.kill("b", "big-node1", 1, "2026-12-01T08:00:00.300000+00:00")
    w, _ = watcher(plan, hosts)
    (td,) = w.check()
    assert td.root.name == "big"
    assert "out of memory (the kernel's OOM killer)" in td.why


def test_a_worker_still_running_beside_a_dead_head_is_removed_too(plan):
    hosts = FakeHosts()
    hosts.kill("a", "big", 1, "2026-12-01T08:00:00.100000+00:00")
    w, _ = watcher(plan, hosts)
    (td,) = w.check()
    assert td.root.name == "big" and td.lost == (td.root,)
    assert hosts.removed == [("a", ["big"]), ("b", ["big-node1"])]


def test_a_removed_container_counts_as_lost(plan):
    hosts = FakeHosts()
    del hosts.containers["b"]["big-node1"]
    w, _ = watcher(plan, hosts)
    (td,) = w.check()
    assert td.why == "native worker big-node1 on host 'b' its container is gone"
    assert hosts.removed == [("a", ["big"])]  # nothing left of it on b
    assert hosts.logs_of == ["big"]  # the head's log: the worker has none any more


def test_an_engine_that_stops_answering_counts_after_the_grace_only(plan):
    hosts = FakeHosts()
    t = [0.0]
    w, said = watcher(plan, hosts, grace=30.0, now=lambda: t[0])
    hosts.down["b"] = "the Docker engine does not answer: connection refused"
    assert w.check() == []
    t[0] = 10.0
    hosts.down.pop("b")  # a blip: it answers again, the clock starts over
    assert w.check() == []
    hosts.down["b"] = "the Docker engine does not answer: connection refused"
    t[0] = 20.0
    assert w.check() == []
    t[0] = 49.0
    assert w.check() == []
    t[0] = 50.0
    (td,) = w.check()
    assert td.root.host == "b" and "its host's engine does not answer" in td.why
    assert hosts.removed == [("a", ["big"])]
    assert td.left == ("host 'b': its engine does not answer",)
    assert said[-1].startswith("service 'big': torn down except on host 'b'")
    assert "`kit down mw` once it answers" in said[-1]


def test_a_failed_removal_is_recorded_not_hidden(plan):
    hosts = FakeHosts()
    hosts.kill("b", "big-node1", 137, "2026-12-01T08:00:00+00:00")

    def refuse(host: str, names: Sequence[str]) -> None:
        raise EngineError("compose rm failed: boom")  # as DockerHosts.remove says it

    hosts.remove = refuse  # type: ignore[method-assign]
    w, _ = watcher(plan, hosts)
    (td,) = w.check()
    assert td.left == ("host 'a': compose rm failed: boom",
                       "host 'b': compose rm failed: boom")  # fmt: skip


# --- the record, kit status, kit watch -----------------------------------------------------------


@pytest.fixture
def deployed(plan, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    folder = record.projects_root() / "mw"
    record.write(folder, plan, state="ready", started_at="2026-12-01T07:00:00Z")
    return folder


def test_watch_stack_records_the_teardown_and_status_says_so(plan, deployed, monkeypatch):
    hosts = FakeHosts()
    notes = mw.status_notes("mw", plan, {}, hosts)
    assert notes == []
    hosts.kill("b", "big-node1", 137, "2026-12-01T08:00:00+00:00")
    notes = mw.status_notes("mw", plan, {}, hosts)
    assert notes == [
        "big: lost native worker big-node1 on host 'b' (exited (exit status 137, killed by signal "
        "9)); the service cannot serve without it. `kit watch mw` diagnoses it and removes it on "
        "every host (the other services stay); `kit down mw` removes the whole stack"
    ]
    said: list[str] = []
    done = mw.watch_stack("mw", once=True, say=said.append, view_for=lambda _e: hosts)
    assert [t.service for t in done] == ["big"]
    dep = record.read(deployed)
    assert dep is not None and dep.state == "ready" and dep.started_at == "2026-12-01T07:00:00Z"
    entry = dep.torn_down["big"]
    assert (entry["host"], entry["part"], entry["container"], entry["exit_code"]) == (
        "b", "big-node1", "mw-big-node1-1", 137,
    )  # fmt: skip
    assert entry["cause"] == "node_lost" and entry["left"] == []
    (note,) = mw.status_notes("mw", plan, dep.torn_down, hosts)
    assert note.startswith(
        f"big: torn down on every host by `kit watch` at {entry['at']} after native worker "
        "big-node1 on host 'b' exited (exit status 137, killed by signal 9) (diagnosis: a node of "
        "the model over several hosts was lost)"
    )
    # a second watcher knows it is done already: nothing left to watch
    assert mw.watch_stack("mw", once=True, say=said.append, view_for=lambda _e: hosts) == []
    # a new `kit up` writes a fresh record: nothing torn down in it
    record.write(deployed, plan, state="ready")
    fresh = record.read(deployed)
    assert fresh is not None and fresh.torn_down == {}


def test_watch_waits_while_up_runs_and_stops_when_the_stack_goes(plan, deployed):
    hosts = FakeHosts()
    hosts.kill("b", "big-node1", 137, "2026-12-01T08:00:00+00:00")
    record.write(deployed, plan, state="starting", started_at="2026-12-01T07:00:00Z")
    said: list[str] = []
    ticks: list[float] = []

    def sleep(s: float) -> None:
        ticks.append(s)
        if len(ticks) == 2:
            record.remove(deployed)  # `kit down` meanwhile

    done = mw.watch_stack("mw", say=said.append, view_for=lambda _e: hosts, sleep=sleep)
    assert done == [] and hosts.removed == []  # `kit up` owns a node lost while loading
    assert any("deployment state starting" in m for m in said)
    assert said[-1] == "stack 'mw' was taken down or started again: stopped watching"


def test_watch_ends_after_its_timeout(plan, deployed):
    hosts = FakeHosts()
    t = [0.0]

    def sleep(s: float) -> None:
        t[0] += s

    done = mw.watch_stack("mw", interval=2.0, timeout=7.0, view_for=lambda _e: hosts,
                          sleep=sleep, now=lambda: t[0], say=lambda _m: None)  # fmt: skip
    assert done == [] and t[0] == 8.0


def test_kit_watch_exits_5_naming_what_it_tore_down(plan, deployed, monkeypatch):
    hosts = FakeHosts()
    hosts.kill("b", "big-node1", 137, "2026-12-01T08:00:00+00:00")
    monkeypatch.setattr(mw, "DockerHosts", lambda _e: hosts)
    res = CliRunner().invoke(cli, ["watch", "mw", "--once"])
    assert res.exit_code == 5, res.output
    assert "watching big on every host" in res.stderr
    assert "diagnosis: a node of the model over several hosts was lost" in res.stderr
    assert (
        "error: service 'big' torn down after native worker big-node1 on host 'b' exited"
        in res.stderr
    )


def test_a_stack_without_a_model_over_hosts_has_nothing_to_watch(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    d = stack_data()
    del d["services"]["big"]
    p = build_plan(parse_stack(yaml.safe_dump(d), base_dir="."))
    record.write(record.projects_root() / "mw", p, state="ready")
    said: list[str] = []
    assert mw.watch_stack("mw", once=True, say=said.append) == []
    assert said == ["stack 'mw': no service runs over several hosts; nothing to watch"]
