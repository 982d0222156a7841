"""The upstream schemas every export is checked against before ``kit export`` writes it.

Vendored in ``kit/data/k8s/`` (provenance, versions and hashes in its ``SOURCE.md``;
regenerate with ``scripts/vendor-k8s-schemas.py``):

- production-stack values: the chart's own ``helm/values.schema.json`` (``vllm-stack`` 0.1.12),
  the JSON Schema ``helm install`` checks values with;
- a LeaderWorkerSet: the ``openAPIV3Schema`` of LWS's CRD (v0.10.0, ``leaderworkerset.x-k8s.io/v1``),
  the schema the API server applies to the object, pod templates included.

Both are read *closed*: an object the schema describes by its ``properties`` takes no other key.
For the CRD that is what the API server does with ``kubectl apply``'s default strict field
validation (an unknown field is an error). For the chart it is stricter than ``helm install``
(which ignores keys its schema does not name): a key the chart does not know would be silently
dropped, so the export must not write one. Nothing else is changed in either schema.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from kit.errors import LintError

DATA = Path(__file__).resolve().parent.parent / "data" / "k8s"
#: what each schema is (the README and the error messages name them)
CHART = "production-stack chart vllm-stack 0.1.12 helm/values.schema.json"
LWS = "LeaderWorkerSet CRD v0.10.0 (leaderworkerset.x-k8s.io/v1)"
LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"

#: keywords whose value is one schema / a list of schemas / a map of name -> schema
_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains")
_MANY = ("allOf", "anyOf", "oneOf", "prefixItems")
_MAP = ("properties", "patternProperties", "$defs", "definitions")


def closed(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object schema that lists its
    ``properties`` and says nothing of other keys (and is not part of a combination)."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _MAP and isinstance(value, dict):
            out[key] = {name: closed(sub) for name, sub in value.items()}
        elif key in _ONE and isinstance(value, dict):
            out[key] = closed(value)
        elif key in _MANY and isinstance(value, list):
            out[key] = [closed(sub) for sub in value]
        else:
            out[key] = value
    open_ended = ("additionalProperties", "patternProperties", "allOf", "anyOf", "oneOf")
    if "properties" in out and not any(k in out for k in open_ended):
        out["additionalProperties"] = False
    return out


@cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = closed(json.loads((DATA / name).read_text(encoding="utf-8")))
    # the CRD's OpenAPI v3 schema names no draft: draft 4 reads its keywords as OpenAPI does;
    # the chart's names 2020-12 (tests check both schemas against their metaschemas)
    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft4Validator)(schema)


def _problems(name: str, doc: Any, where: str) -> list[str]:
    out = []
    for err in sorted(_validator(name).iter_errors(doc), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        out.append(f"{where}: {path}: {err.message}")
    return out


def values_problems(doc: Any) -> list[str]:
    """Where production-stack values break the chart's schema (empty: none)."""
    return _problems("production-stack-values.schema.json", doc, "values")


def lws_problems(doc: Any) -> list[str]:
    """Where a LeaderWorkerSet object breaks LWS's CRD schema (empty: none)."""
    where = f"LeaderWorkerSet {doc.get('metadata', {}).get('name')}"
    if doc.get("apiVersion") != LWS_API_VERSION:
        return [f"{where}: apiVersion {doc.get('apiVersion')!r} is not {LWS_API_VERSION}"]
    return _problems("leaderworkerset-v1.schema.json", doc, where)


def check(fmt: str, docs: list[Any]) -> None:
    """Refuse an export the upstream schemas reject: :class:`LintError` with every problem."""
    problems: list[str] = []
    if fmt == "production-stack":
        problems = [p for d in docs for p in values_problems(d)]
        against = CHART
    else:
        problems = [p for d in docs if d.get("kind") == "LeaderWorkerSet" for p in lws_problems(d)]
        against = LWS
    if problems:
        raise LintError(
            f"the {fmt} export breaks the {against}:\n" + "\n".join(f"  - {p}" for p in problems),
            hint="this is a bug in the kit's export, not in the stack: report it with the stack",
        )
