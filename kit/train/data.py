"""Training data files: one JSON object per line, in the shape each method reads.

- ``sft``: ``{"messages": [{"role": ..., "content": ...}, ...]}`` with at least one
  assistant message: the chat format ``kit batch`` and the OpenAI API use.
- ``dpo``: ``{"prompt": ..., "chosen": ..., "rejected": ...}``: the preference format TRL reads;
  each either a string or a list of chat messages.
- ``distill``: prompts, ``{"messages": [...]}`` ending with a user message, or ``{"prompt": "..."}``;
  the teacher's answers complete them.

:func:`check_data` reads the whole file and reports the first bad line with its number, so a
job never starts on data that would fail after minutes of loading.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant", "tool", "developer")


@dataclass(frozen=True)
class DataCheck:
    lines: int
    #: the first problem, starting with "line N: ", or None
    problem: str | None = None


def _messages(value: Any, what: str) -> str | None:
    if not isinstance(value, list) or not value:
        return f"{what} must be a non-empty list of chat messages"
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            return f"{what}[{i}] must be an object with role and content"
        if m.get("role") not in ROLES:
            return f"{what}[{i}].role is {m.get('role')!r}; use one of {', '.join(ROLES)}"
        if not isinstance(m.get("content"), str):
            return f"{what}[{i}].content must be a string"
    return None


def _text_or_messages(obj: dict[str, Any], key: str) -> str | None:
    if key not in obj:
        return f"{key!r} is missing"
    value = obj[key]
    if isinstance(value, str):
        return None if value.strip() else f"{key!r} is empty"
    return _messages(value, repr(key))


def line_problem(obj: Any, method: str) -> str | None:
    """Why one parsed line does not fit ``method``, or None."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, not {type(obj).__name__}"
    if method == "sft":
        if "messages" not in obj:
            return 'no "messages": sft lines are {"messages": [{"role": "user", ...}, ...]}'
        bad = _messages(obj["messages"], '"messages"')
        if bad:
            return bad
        if not any(m["role"] == "assistant" for m in obj["messages"]):
            return '"messages" has no assistant message: nothing to learn from'
        return None
    if method == "dpo":
        for key in ("prompt", "chosen", "rejected"):
            bad = _text_or_messages(obj, key)
            if bad:
                return f"{bad}: dpo lines are {{'prompt': ..., 'chosen': ..., 'rejected': ...}}"
        if obj["chosen"] == obj["rejected"]:
            return "chosen and rejected are the same: the pair teaches nothing"
        return None
    if method == "distill":
        if "messages" in obj:
            bad = _messages(obj["messages"], '"messages"')
            if bad:
                return bad
            if obj["messages"][-1]["role"] != "user":
                return '"messages" must end with a user message: the teacher answers it'
            return None
        if isinstance(obj.get("prompt"), str) and obj["prompt"].strip():
            return None
        return 'distill lines are {"messages": [..., {"role": "user", ...}]} or {"prompt": "..."}'
    raise ValueError(f"unknown method {method!r}")


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as f:
        yield from enumerate(f, 1)


def check_data(path: Path, method: str) -> DataCheck:
    """Every line of ``path`` against ``method``; the first bad line stops the check."""
    count = 0
    try:
        for n, raw in _lines(path):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except UnicodeDecodeError:
                return DataCheck(count, f"line {n}: not UTF-8 text")
            except json.JSONDecodeError as exc:
                return DataCheck(
                    count, f"line {n}: not valid JSON ({exc.msg} at column {exc.colno})"
                )
            bad = line_problem(obj, method)
            if bad:
                return DataCheck(count, f"line {n}: {bad}")
            count += 1
    except OSError as exc:
        return DataCheck(0, f"cannot be read: {exc.strerror or exc}")
    if count == 0:
        return DataCheck(0, "has no lines: one JSON object per line expected")
    return DataCheck(count)


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The file's objects (after :func:`check_data` passed)."""
    return [json.loads(raw) for _, raw in _lines(path) if raw.strip()]


def prompt_messages(obj: dict[str, Any]) -> list[dict[str, str]]:
    """A distill or eval line as the chat messages a model answers."""
    if "messages" in obj:
        return [{"role": m["role"], "content": m["content"]} for m in obj["messages"]]
    return [{"role": "user", "content": obj["prompt"]}]
