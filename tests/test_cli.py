"""The CLI, driven as a user would (CliRunner), including exit codes for bad input."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from kit.cli import cli


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


def test_lint_all_and_failure(stack_file):
    res = run("lint")
    assert res.exit_code == 0, res.output
    assert "lint:" in res.output and "passed" in res.output
    res = run("lint", str(stack_file({"defaults": {"image": "x:latest"}})))
    assert res.exit_code == 1
    assert "FAIL" in res.output
