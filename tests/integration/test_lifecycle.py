"""The whole lifecycle against the real Docker engine, compose binary and HTTP, with the
engine double standing in for vLLM (only the image of the rendered compose file changes)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from dockerutil import project_containers, project_networks
from kit import lifecycle
from kit.cli import cli
from kit.engine import Project
from kit.errors import NotReadyError
from kit.plan import build_plan
from kit.readiness import Phase
from kit.render import RenderOptions
from kit.smoke import smoke
from kit.spec import load_stack


def project_for(path, image):
    plan = build_plan(load_stack(path))
    return plan, Project(plan, options=RenderOptions(image=image))


def test_up_smoke_status_down(sim_stack, docker_engine):
    path = sim_stack()
    plan, project = project_for(path, docker_engine)
    name = plan.stack.name

    events: list[tuple[float, str, Phase]] = []

    def listen(elapsed, services, changed):
        if changed is not None:
            events.append((elapsed, changed.name, changed.phase))

    result = lifecycle.up(plan, project, listener=listen)
    by_name = {p.name: p for p in result.services}

    # the kit waited through the slow start (the LLM double loads for 8 s)
    assert by_name["llm"].ready_at >= 8
    assert (by_name["llm"].name, Phase.LOADING) in [(n, ph) for _, n, ph in events]
    # embed and rerank share GPU 4: rerank started only once embed was ready
    assert plan.service("rerank").depends_on == ("embed",)
    assert by_name["rerank"].started_at >= by_name["embed"].ready_at

    # every container sees exactly its planned GPUs, set by the engine's NVIDIA driver
    states = project.states()
    for s in plan.services:
        assert project.visible_devices(states[s.name].id) == ",".join(map(str, s.gpus))

    # every endpoint answers correctly
    checks = smoke(plan)
    assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok]
    assert {c.service for c in checks} == {"llm", "embed", "rerank"}

    # up again on a healthy stack changes nothing and reports ready
    ids = {k: v.id for k, v in states.items()}
    again = lifecycle.up(plan, project)
    assert again.elapsed < 10
    assert {k: v.id for k, v in project.states().items()} == ids

    res = CliRunner().invoke(cli, ["status", str(path)])
    assert res.exit_code == 0, res.output
    assert "0,1,2,3" in res.output and "listed" in res.output

    res = CliRunner().invoke(cli, ["logs", str(path), "llm", "--tail", "50"])
    assert res.exit_code == 0 and "Application startup complete" in res.output

    lifecycle.down(project)
    assert project_containers(name) == []
    assert project_networks(name) == []
    lifecycle.down(project)  # down on a stack that is not up succeeds


def test_cli_up_shows_progress_lines_then_smoke_and_down(sim_stack, docker_engine):
    path = sim_stack(env={"llm": {"KIT_DOUBLE_LOAD_SECONDS": "2"}})
    runner = CliRunner()
    res = runner.invoke(cli, ["up", str(path), "--image", docker_engine])
    assert res.exit_code == 0, res.output + res.stderr
    assert "IMAGE OVERRIDE" in res.output and docker_engine in res.output
    assert "llm: loading: port closed" in res.output
    assert "llm: ready" in res.output and "is ready after" in res.output
    res = runner.invoke(cli, ["smoke", str(path)])
    assert res.exit_code == 0, res.output
    assert "0 failed" in res.output
    res = runner.invoke(cli, ["down", str(path)])
    assert res.exit_code == 0


def test_crash_while_loading_is_diagnosed_and_removed(sim_stack, docker_engine):
    path = sim_stack(env={"llm": {"KIT_DOUBLE_LOAD_SECONDS": "60", "KIT_DOUBLE_CRASH_AFTER": "2"}})
    plan, project = project_for(path, docker_engine)
    with pytest.raises(NotReadyError) as info:
        lifecycle.up(plan, project)
    msg = str(info.value)
    assert "service 'llm'" in msg
    assert "CUDA out of memory" in msg  # the diagnosis, from the real container log
    assert "fix:" in msg and "removed what was started" in msg
    assert info.value.cause == "oom"
    assert project_containers(plan.stack.name) == []


def test_exit_after_ready_is_a_failure(sim_stack, docker_engine):
    # embed is ready after 1 s and dies at 4 s, while the LLM still loads
    path = sim_stack(
        env={
            "llm": {"KIT_DOUBLE_LOAD_SECONDS": "30"},
            "embed": {"KIT_DOUBLE_LOAD_SECONDS": "1", "KIT_DOUBLE_CRASH_AFTER": "4"},
        }
    )
    plan, project = project_for(path, docker_engine)
    with pytest.raises(NotReadyError) as info:
        lifecycle.up(plan, project)
    assert "service 'embed'" in str(info.value)
    assert "after it was ready" in str(info.value) or "restarted" in str(info.value)
    assert project_containers(plan.stack.name) == []


def test_keep_on_failure_keeps_containers_for_debugging(sim_stack, docker_engine):
    path = sim_stack(env={"embed": {"KIT_DOUBLE_FAIL": "free_memory"}})
    plan, project = project_for(path, docker_engine)
    with pytest.raises(NotReadyError) as info:
        lifecycle.up(plan, project, keep_on_failure=True)
    assert "not enough free GPU memory at start-up" in str(info.value)
    assert "kept for debugging" in str(info.value)
    assert project_containers(plan.stack.name) != []
    lifecycle.down(project)
    assert project_containers(plan.stack.name) == []


def test_never_healthy_times_out_and_smoke_fails(sim_stack, docker_engine):
    path = sim_stack(
        env={"llm": {"KIT_DOUBLE_LOAD_SECONDS": "1", "KIT_DOUBLE_HTTP_503": "1"}},
        patch={"llm": {"startup_timeout": 10}},
    )
    plan, project = project_for(path, docker_engine)
    with pytest.raises(NotReadyError) as info:
        lifecycle.up(plan, project, keep_on_failure=True)
    assert "not ready after 10s (phase: loading: /health not 200)" in str(info.value)
    checks = smoke(plan, ["llm"])
    assert not any(c.ok for c in checks if c.name == "health")
    res = CliRunner().invoke(cli, ["smoke", str(path), "llm"])
    assert res.exit_code == 6 and "checks failed" in res.stderr
    lifecycle.down(project)


@pytest.mark.parametrize(
    ("cause", "title"),
    [
        ("world_size", "exceeds the GPUs the container sees"),
        ("model_missing", "model folder missing"),
        ("gated_401", "refused the download"),
        ("unrecognized_args", "does not know a flag"),
    ],
)
def test_startup_failures_are_diagnosed(sim_stack, docker_engine, cause, title):
    path = sim_stack(env={"embed": {"KIT_DOUBLE_FAIL": cause}})
    plan, project = project_for(path, docker_engine)
    with pytest.raises(NotReadyError) as info:
        lifecycle.up(plan, project)
    assert title in str(info.value)
    assert project_containers(plan.stack.name) == []


def test_ctrl_c_during_up_removes_what_it_started(sim_stack, docker_engine, state_dir):
    import os
    import signal
    import subprocess
    import sys
    import time

    from dockerutil import project_containers

    path = sim_stack(env={"llm": {"KIT_DOUBLE_LOAD_SECONDS": "60"}})
    name = path.stem
    env = {**os.environ, "KIT_STATE_DIR": str(state_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kit", "up", str(path), "--image", docker_engine],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not project_containers(name) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    assert project_containers(name), "kit up never started a container"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "interrupted" in out and "removed what was started" in out
    assert project_containers(name) == []


def test_missing_model_folder_is_refused_before_anything_starts(sim_stack, docker_engine):
    from kit.errors import KitError

    path = sim_stack(patch={"embed": {"model": "no-such-model"}})
    plan, project = project_for(path, docker_engine)
    with pytest.raises(
        KitError, match=r"model folders missing on this host: embed: .*no-such-model"
    ):
        lifecycle.up(plan, project)
    assert project_containers(plan.stack.name) == []


# --- the deployment record: later commands act on what runs, not on today's stack file -------


def up_fast(sim_stack, image):
    path = sim_stack(env={s: {"KIT_DOUBLE_LOAD_SECONDS": "1"} for s in ("llm", "embed", "rerank")})
    res = CliRunner().invoke(cli, ["up", str(path), "--image", image])
    assert res.exit_code == 0, res.output + res.stderr
    assert len(project_containers(path.stem)) == 3
    return path


def test_down_after_the_stack_file_changed_removes_what_runs(sim_stack, docker_engine):
    import yaml

    from dockerutil import free_port
    from kit import record
    from kit.engine import project_folder

    path = up_fast(sim_stack, docker_engine)
    name = path.stem
    old_port = yaml.safe_load(path.read_text())["services"]["llm"]["port"]
    # after `kit up`: a service renamed, a port changed, even the project renamed
    data = yaml.safe_load(path.read_text())
    data["services"]["reranker"] = data["services"].pop("rerank")
    data["services"]["llm"]["port"] = free_port()
    data["name"] = f"{name}-renamed"
    path.write_text(yaml.safe_dump(data, sort_keys=False))

    runner = CliRunner()
    res = runner.invoke(cli, ["status", str(path)])
    assert res.exit_code == 0, res.output + res.stderr
    assert "changed since `kit up`" in res.stderr
    assert "rerank " in res.stdout and "reranker" not in res.stdout
    assert f"127.0.0.1:{old_port}" in res.stdout and "listed" in res.stdout
    res = runner.invoke(cli, ["smoke", str(path)])  # the running endpoints, from the record
    assert res.exit_code == 0 and "0 failed" in res.output, res.output + res.stderr

    res = runner.invoke(cli, ["down", str(path)])
    assert res.exit_code == 0, res.output + res.stderr
    assert f"stack '{name}' is down" in res.output
    assert project_containers(name) == [] and project_networks(name) == []
    assert record.read(project_folder(name)) is None
    res = runner.invoke(cli, ["status", str(path)])
    assert res.exit_code == 1 and "is not up: no deployment record" in res.stderr


def test_down_after_the_stack_file_was_deleted(sim_stack, docker_engine):
    path = up_fast(sim_stack, docker_engine)
    path.unlink()
    res = CliRunner().invoke(cli, ["down", str(path)])
    assert res.exit_code == 0, res.output + res.stderr
    assert project_containers(path.stem) == [] and project_networks(path.stem) == []
