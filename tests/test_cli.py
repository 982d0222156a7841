"""The CLI, driven as a user would (CliRunner), including exit codes for bad input."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner
from fakeengine import FakeClock, FakeEngine, Script

from kit import lifecycle, record
from kit.cli import cli
from kit.engine import project_folder
from kit.plan import build_plan
from kit.spec import load_stack


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_plan_shows_map_order_and_commands():
    res = run("plan", "source-notes")
    assert res.exit_code == 0, res.output
    out = res.output
    assert "GPU map" in out and "services in start order" in out
    assert "vllm serve /models/deepseek-ai/DeepSeek-R1" in out
    assert "--runner pooling" in out and "--convert classify" in out
    assert "--task score translated" in out


def test_render_to_stdout_is_the_compose_file():
    res = run("render", "deepseek-r1")
    assert res.exit_code == 0
    doc = yaml.safe_load(res.stdout)
    assert doc["services"]["deepseek-r1"]["deploy"]["resources"]["reservations"]["devices"][0][
        "device_ids"
    ] == [str(i) for i in range(8)]
    assert "warning:" not in res.stdout  # warnings go to stderr so redirection stays clean


def test_render_to_file(tmp_path):
    out = tmp_path / "docker-compose.yml"
    res = run("render", "jina-embeddings-v3", "-o", str(out))
    assert res.exit_code == 0
    assert yaml.safe_load(out.read_text())["name"] == "jina-embeddings-v3"


def test_invalid_stack_exits_2_with_message_and_renders_nothing(stack_file, tmp_path):
    out = tmp_path / "c.yml"
    res = run("render", str(stack_file({"services": {"llm": {"gpus": [7, 8]}}})), "-o", str(out))
    assert res.exit_code == 2
    assert "service 'llm', field 'gpus': GPU id 8 outside the host's 8 GPUs" in res.stderr
    assert not out.exists()
    assert run("plan", str(stack_file({"services": {"llm": {"gpus": [7, 8]}}}))).exit_code == 2


def test_unknown_stack_name():
    res = run("plan", "no-such-stack")
    assert res.exit_code == 1
    assert "no stack 'no-such-stack'" in res.stderr and "stacks there:" in res.stderr


def test_lint_all_and_failure(stack_file, monkeypatch):
    # the real compose binary's check runs in test_lint.py (marked docker); here a stand-in
    checked: list[str] = []
    monkeypatch.setattr("kit.lint.compose_config_problems", lambda text: checked.append(text) or [])
    res = run("lint")
    assert res.exit_code == 0, res.output
    assert "lint:" in res.output and "passed" in res.output
    assert checked and all("services:" in text for text in checked)
    res = run("lint", str(stack_file({"defaults": {"image": "x:latest"}})))
    assert res.exit_code == 3  # LintError
    assert "FAIL" in res.output


# --- commands that act on what runs: the deployment record ----------------------------------


class FakeDocker:
    """Every Project the CLI makes becomes an in-memory engine double: one per project (its
    containers kept across commands), all on one fake clock."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.engines: dict[str, FakeEngine] = {}

    def project(self, plan, options=None) -> FakeEngine:
        name = plan.stack.name
        engine = self.engines.get(name)
        if engine is None or engine.plan != plan:
            script = Script(log=((0, f"{name} loading"), (1, "startup complete")))
            scripts = dict.fromkeys((s.name for s in plan.services), script)
            new = FakeEngine(
                plan, self.clock, scripts, folder=project_folder(name), options=options
            )
            if engine is not None:
                new.containers = engine.containers  # the same project: the same containers
            engine = self.engines[name] = new
        return engine

    def up(self, path):
        """`kit up` on the double (lifecycle.up with fake endpoints and time)."""
        plan = build_plan(load_stack(path))
        engine = self.project(plan)
        lifecycle.up(plan, engine, endpoints=engine.endpoints, clock=self.clock)
        return plan, engine


@pytest.fixture
def fake_docker(tmp_path, monkeypatch) -> FakeDocker:
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    docker = FakeDocker()
    monkeypatch.setattr("kit.engine.Project", docker.project)
    return docker


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["logs"],
        ["smoke"],
        ["bench", "--no-plots"],
        ["batch", "llm", "in.jsonl", "-o", "out.jsonl"],
    ],
    ids=lambda a: a[0],
)
def test_commands_on_a_stack_that_is_not_up(args, stack_file, fake_docker):
    path = str(stack_file())
    res = CliRunner().invoke(cli, [args[0], path, *args[1:]])
    assert res.exit_code == 1, res.output
    assert f"stack '{path}' is not up: no deployment record; run `kit up {path}`" in res.stderr


def test_status_logs_down_use_the_record_after_the_file_changed(stack_file, fake_docker):
    path = stack_file({"services": {"llm": {"env": {"A": "1"}}}})
    plan, engine = fake_docker.up(path)
    assert record.read(engine.folder).state == "ready"
    # the file now says something else: a service renamed, another port
    data = yaml.safe_load(path.read_text())
    data["services"]["assistant"] = {**data["services"].pop("llm"), "port": 9011}
    path.write_text(yaml.safe_dump(data))

    res = run("status", str(path))
    assert res.exit_code == 0, res.output
    assert "llm" in res.stdout and "assistant" not in res.stdout  # what runs, not the file
    assert "127.0.0.1:9001" in res.stdout and "0,1,2,3" in res.stdout
    assert "changed since `kit up` (sha256 differs)" in res.stderr

    res = run("logs", str(path), "llm")
    assert res.exit_code == 0 and "startup complete" in res.stdout
    res = CliRunner().invoke(cli, ["logs", str(path), "assistant"])
    assert res.exit_code == 1 and "has no service 'assistant'" in res.stderr

    res = run("down", str(path))
    assert res.exit_code == 0 and "stack 't' is down" in res.stdout
    downed = fake_docker.engines["t"]
    assert downed.plan == plan and downed.actions()[-1] == "down"  # the recorded plan's project
    assert downed.containers == {}
    assert record.read(engine.folder) is None
    res = CliRunner().invoke(cli, ["status", str(path)])
    assert res.exit_code == 1 and "is not up" in res.stderr


def test_down_after_the_file_was_deleted(stack_file, fake_docker):
    path = stack_file(name="gone")
    fake_docker.up(path)
    path.unlink()
    res = run("status", str(path))
    assert res.exit_code == 0 and "is gone" in res.stderr
    res = run("down", str(path))
    assert res.exit_code == 0 and "stack 'gone' is down" in res.stdout
    assert fake_docker.engines["gone"].containers == {}


def test_down_without_a_record_renders_from_the_stack_file(stack_file, fake_docker):
    # a stack started by an older kit (no record), or not up at all: down still works
    path = stack_file(name="old")
    res = run("down", str(path))
    assert res.exit_code == 0 and "stack 'old' is down" in res.stdout
    assert fake_docker.engines["old"].actions() == ["write", "down"]


def test_down_with_an_unreadable_record_goes_by_project_name(stack_file, fake_docker, monkeypatch):
    path = stack_file(name="odd")
    _, engine = fake_docker.up(path)
    file = engine.folder / record.FILE_NAME
    file.write_text(json.dumps({**json.loads(file.read_text()), "schema": 99}))
    downed: list[str] = []
    monkeypatch.setattr("kit.engine.down_by_name", lambda name, volumes=False: downed.append(name))
    res = run("down", str(path))
    assert res.exit_code == 0 and "stack 'odd' is down" in res.stdout
    assert "cannot be read: schema 99" in res.stderr
    assert downed == ["odd"] and not file.exists()
