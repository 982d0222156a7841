"""Template linting with the compose-spec schema and the real compose binary."""

from __future__ import annotations

from pathlib import Path

import pytest

from kit.lint import compose_config_problems, lint_stack, lint_templates, schema_problems
from kit.spec import list_stacks, load_stack

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", list_stacks(REPO / "stacks"), ids=lambda p: p.stem)
def test_every_shipped_stack_lints(path):
    """Plan, render, schema; the compose check is a stand-in here (no Docker needed)."""
    checked: list[str] = []
    res = lint_stack(path, compose_check=lambda text: checked.append(text) or [])
    assert res.ok, res.problems
    stack = load_stack(path)
    files = 1 if stack.hosts is None else len(stack.hosts)  # one compose file per host
    assert len(checked) == files and f'kit.stack: "{stack.name}"' in checked[0]


def test_compose_check_problems_are_reported(stack_file):
    res = lint_stack(stack_file(), compose_check=lambda text: ["docker compose config: nope"])
    assert res.problems == ["docker compose config: nope"]


@pytest.mark.docker
@pytest.mark.parametrize("path", list_stacks(REPO / "stacks"), ids=lambda p: p.stem)
def test_every_shipped_stack_passes_the_real_compose(path):
    res = lint_stack(path)  # the default check: the real `docker compose config`
    assert res.ok, res.problems


def test_templates_parse():
    assert lint_templates().ok


def test_template_syntax_error_is_reported(tmp_path):
    (tmp_path / "good.j2").write_text("{{ a }}\n")
    (tmp_path / "bad.j2").write_text("line one\n{% for x in %}\n")
    res = lint_templates(tmp_path)
    assert not res.ok
    assert res.problems[0].startswith("bad.j2:2:")


def test_schema_catches_what_compose_would_reject():
    bad = "services:\n  a:\n    image: 1\n    healthcheck: {interval: 5}\nservicez: {}\n"
    found = schema_problems(bad)
    assert any("(top level)" in p and "servicez" in p for p in found)
    assert any(p.startswith("compose-spec schema: services.a.image") for p in found)


@pytest.mark.docker
def test_real_compose_binary_rejects_bad_file():
    found = compose_config_problems("services:\n  a:\n    image: x:1\n    privileged: maybe\n")
    assert found and found[0].startswith("docker compose config:")
    assert compose_config_problems("services:\n  a:\n    image: x:1\n") == []


def test_lint_reports_invalid_stack(stack_file):
    res = lint_stack(stack_file({"defaults": {"image": "x:latest"}}))
    assert not res.ok and "moving tag" in res.problems[0]
