"""kit doctor: findings about the machine and the stack, each with a fix."""

from __future__ import annotations

from click.testing import CliRunner

from kit.cli import cli
from kit.doctor import doctor
from kit.plan import build_plan
from kit.spec import load_stack


def by_check(findings):
    return {f.check: f for f in findings}


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


def test_doctor_on_this_machine(docker_engine):
    """With the simulation engine up, the NVIDIA finding says SIMULATED and no GPU is seen."""
    res = CliRunner().invoke(cli, ["doctor", "sim-demo"])
    assert "docker engine" in res.output and "the engine answers" in res.output
    found = by_check(doctor(build_plan(load_stack("sim-demo"))))
    assert found["docker compose"].status == "ok"
    assert found["NVIDIA device driver"].status in ("ok", "warn")
    assert all(found[f"model {n}"].status == "ok" for n in ("llm", "embed", "rerank"))
