"""Reading a batch input file: one OpenAI-format request per line (``custom_id``, ``method``,
``url``, ``body``), validated for one service of the stack; a bad line becomes an
:class:`InvalidLine` with its line number and what to change, and never stops the others.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit import kinds
from kit.batch.results import INVALID, error_line
from kit.service_plan import ServicePlan


@dataclass(frozen=True)
class BatchRequest:
    line: int
    custom_id: str
    url: str
    body: dict[str, Any]
    #: ``body.model`` as given (None: omitted), before the kit set it to the served name
    model_given: str | None


@dataclass(frozen=True)
class InvalidLine:
    line: int
    custom_id: str | None
    message: str  # starts with "line N: "

    def to_json(self) -> dict[str, Any]:
        out = error_line(self.custom_id, INVALID, self.message)
        out["error"]["line"] = self.line
        return out


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _kind_mismatch(url: str, kind: str, service: ServicePlan) -> str:
    serves = ", ".join(kinds.kind(service.kind).batch_urls)
    return (
        f"url {url} is {_a(kind)} request, but service '{service.name}' is {_a(service.kind)} "
        f"service (it serves {serves}); send {kind} requests to {_a(kind)} service of the stack"
    )


def _check_url(url: object, service: ServicePlan) -> str | None:
    if not isinstance(url, str) or not url:
        return 'url is missing; set it to the endpoint path, e.g. "/v1/chat/completions"'
    if url in kinds.kind(service.kind).batch_urls:
        return None
    kind = kinds.kind_of_batch_url(url)
    if kind is None:
        known = ", ".join(kinds.kind(service.kind).batch_urls)
        return f"url {url!r} is not a batch endpoint; service '{service.name}' ({service.kind}) serves {known}"
    return _kind_mismatch(url, kind, service)


def _check_fields(obj: dict[str, Any], service: ServicePlan) -> str | None:
    method = obj.get("method")
    if not isinstance(method, str) or method.upper() != "POST":
        return f'method {method!r} is not supported; batch requests use "method": "POST"'
    problem = _check_url(obj.get("url"), service)
    if problem:
        return problem
    body = obj.get("body")
    if body is None:
        return 'body is missing; put the request JSON under "body"'
    if not isinstance(body, dict):
        return f"body must be a JSON object (the request JSON), not {type(body).__name__}"
    if body.get("stream"):
        return 'body sets "stream": true; batch requests cannot stream: remove it'
    return None


def parse_line(raw: bytes, line: int, service: ServicePlan) -> BatchRequest | InvalidLine | None:
    """One input line as a request for ``service``; None for a blank line."""
    if not raw.strip():
        return None
    try:
        obj = json.loads(raw)
    except UnicodeDecodeError:
        return InvalidLine(line, None, f"line {line}: not UTF-8 text; save the file as UTF-8")
    except json.JSONDecodeError as exc:
        return InvalidLine(
            line,
            None,
            f"line {line}: not valid JSON ({exc.msg} at column {exc.colno}); "
            "each line must be one JSON object",
        )
    if not isinstance(obj, dict):
        return InvalidLine(
            line,
            None,
            f"line {line}: expected a JSON object with custom_id, method, url and body, "
            f"not {type(obj).__name__}",
        )
    cid = obj.get("custom_id")
    if not isinstance(cid, str) or not cid:
        what = "missing" if cid is None else f"{cid!r}, not a non-empty string"
        return InvalidLine(
            line,
            None,
            f"line {line}: custom_id is {what}; every request needs a unique string custom_id",
        )
    problem = _check_fields(obj, service)
    if problem:
        return InvalidLine(line, cid, f"line {line}: custom_id {cid!r}: {problem}")
    body = dict(obj["body"])
    given = body.get("model")
    body["model"] = service.served_name
    return BatchRequest(line, cid, obj["url"], body, given if isinstance(given, str) else None)


def _input_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as f:
        yield from enumerate(f, 1)


@dataclass
class InputScan:
    """What the input holds, without keeping the request bodies in memory."""

    #: line number -> custom_id of each valid request, in input order
    requests: dict[int, str] = field(default_factory=dict)
    invalid: list[InvalidLine] = field(default_factory=list)
    #: requests whose body.model was omitted / named another model
    model_omitted: int = 0
    model_other: Counter[str] = field(default_factory=Counter)


def scan_input(path: Path, service: ServicePlan) -> InputScan:
    """Validate every line (and custom_id uniqueness); the bodies are read again when sent."""
    scan = InputScan()
    first_seen: dict[str, int] = {}
    for line, raw in _input_lines(path):
        got = parse_line(raw, line, service)
        if got is None:
            continue
        cid = got.custom_id
        if cid is not None and cid in first_seen:
            scan.invalid.append(
                InvalidLine(
                    line,
                    cid,
                    f"line {line}: custom_id {cid!r} is already used on line {first_seen[cid]}; "
                    "custom_ids must be unique in a batch",
                )
            )
            continue
        if cid is not None:
            first_seen[cid] = line
        if isinstance(got, InvalidLine):
            scan.invalid.append(got)
            continue
        scan.requests[line] = cid
        if got.model_given is None:
            scan.model_omitted += 1
        elif got.model_given != service.served_name:
            scan.model_other[got.model_given] += 1
    return scan


def iter_requests(
    path: Path, service: ServicePlan, lines: frozenset[int]
) -> Iterator[BatchRequest]:
    """The requests on ``lines`` (validated by :func:`scan_input`), read again from the file."""
    for line, raw in _input_lines(path):
        if line in lines:
            got = parse_line(raw, line, service)
            if isinstance(got, BatchRequest):
                yield got
