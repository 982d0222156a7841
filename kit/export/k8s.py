"""``kit export k8s``: a plan in one of the export formats, checked against the upstream schemas
(:mod:`kit.export.upstream`) before anything is written: an export they reject is refused.

The formats: :mod:`kit.export.manifests` (plain Kubernetes objects) and :mod:`kit.export.values`
(values for vLLM's production-stack Helm chart); what they share is :mod:`kit.export.common`.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from kit.errors import KitError
from kit.export import common, manifests, upstream, values
from kit.plan import Plan

FORMATS = ("production-stack", "manifests")


@dataclass(frozen=True)
class Export:
    """The files of one export: name -> text, and what the user must know."""

    files: dict[str, str]
    notes: tuple[str, ...]


def export(plan: Plan, fmt: str) -> Export:
    if fmt not in FORMATS:
        raise KitError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    notes = [n for s in common.group(plan) if (n := common.model_source(plan, s).note)]
    if fmt == "manifests":
        name, text = f"{plan.stack.name}.k8s.yaml", manifests.render(plan)
    else:
        name, text = f"{plan.stack.name}.values.yaml", values.render(plan)
    upstream.check(fmt, [d for d in yaml.safe_load_all(text) if d is not None])
    return Export({name: text}, tuple(notes))
