"""The Jinja environment every generated file is rendered with: the ``templates/`` folder,
``StrictUndefined`` (a missing value is an error, never an empty string) and the ``q`` filter
(a YAML scalar that means exactly the value).

Below every renderer (:mod:`kit.render`, :mod:`kit.gateway_render`, :mod:`kit.observe_grafana`,
:mod:`kit.train`, :mod:`kit.export`), so none of them imports another for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2


def templates_dir() -> Path:
    """``templates/`` beside the package in a checkout, or inside it when installed."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "templates", here / "templates"):
        if cand.is_dir():
            return cand
    raise FileNotFoundError("kit templates folder not found")  # pragma: no cover


def environment(folder: Path | None = None) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder or templates_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = quote
    return env


def quote(value: Any) -> str:
    """A YAML scalar that means exactly ``value`` (JSON strings are valid YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(str(value), ensure_ascii=False)
