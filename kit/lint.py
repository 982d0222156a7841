"""Template linting for CI: every template parses, every stack renders, and each rendered
compose file passes the compose-spec JSON schema and the real compose binary."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import jsonschema
import yaml

from kit.compose_binary import compose_command
from kit.errors import KitError
from kit.jinja_env import environment, templates_dir
from kit.plan import build_plan
from kit.render import render_compose
from kit.spec import load_stack

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "compose-spec.json"


@dataclass
class LintResult:
    target: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def lint_templates(folder: Path | None = None) -> LintResult:
    folder = folder or templates_dir()
    res = LintResult(str(folder))
    env = environment(folder)
    names = sorted(p.name for p in folder.glob("*.j2"))
    if not names:
        res.problems.append(f"no templates (*.j2) in {folder}")
    for name in names:
        try:
            env.parse((folder / name).read_text(encoding="utf-8"), name=name)
        except jinja2.TemplateSyntaxError as exc:
            res.problems.append(f"{name}:{exc.lineno}: {exc.message}")
    return res


@cache
def compose_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def schema_problems(compose_text: str) -> list[str]:
    try:
        doc = yaml.safe_load(compose_text)
    except yaml.YAMLError as exc:
        return [f"rendered compose file is not valid YAML: {exc}"]
    # the schema declares draft-07 with an https $schema that jsonschema does not map itself
    validator = jsonschema.Draft7Validator(compose_schema())
    out = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        out.append(f"compose-spec schema: {where}: {err.message}")
    return out


def compose_config_problems(compose_text: str, workdir: Path | None = None) -> list[str]:
    """Run the real ``docker compose config --quiet`` on the text (no daemon needed).

    ``--no-env-resolution``: env files hold secrets that may not exist on the linting machine.
    """
    cmd = [*compose_command(), "-f", "-", "config", "--quiet", "--no-env-resolution"]
    proc = subprocess.run(
        cmd,
        input=compose_text,
        capture_output=True,
        text=True,
        cwd=workdir,
        check=False,
    )
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
        return [f"docker compose config: {msg}"]
    return []


#: checks a rendered compose file, returning problems: :func:`compose_config_problems` runs the
#: real compose binary; tests without Docker inject a stand-in
ComposeCheck = Callable[[str], list[str]]


def lint_stack(ref: str | Path, *, compose_check: ComposeCheck | None = None) -> LintResult:
    """Plan, render and check one stack; ``compose_check`` defaults to the real compose."""
    check = compose_check or compose_config_problems
    res = LintResult(str(ref))
    try:
        plan = build_plan(load_stack(ref))
    except KitError as exc:
        res.problems.append(str(exc))
        return res
    res.warnings += list(plan.warnings)
    if plan.stack.hosts is not None:  # one compose file per host (kit.hosts), each checked
        from kit.hosts import compose_texts

        texts = compose_texts(plan)
        if compose_texts(plan) != texts:
            res.problems.append("rendering is not deterministic: two renders differ")
        for host, body in texts.items():
            res.problems += [f"host '{host}': {p}" for p in schema_problems(body) + check(body)]
        return res
    text = render_compose(plan)
    if render_compose(plan) != text:
        res.problems.append("rendering is not deterministic: two renders differ")
    res.problems += schema_problems(text)
    res.problems += check(text)
    return res
