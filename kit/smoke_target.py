"""What a ``kit smoke`` check talks to, and how it fails: shared by the checks of each kind
(:mod:`kit.smoke`), of the jobs' LoRA adapters (:mod:`kit.train.smoke`) and of the gateway
(:mod:`kit.gateway_smoke`), so none of them imports another for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kit import vllm_versions as vv
from kit.client import Endpoint, Response
from kit.service_plan import ServicePlan


@dataclass(frozen=True)
class Target:
    """What a check talks to: the endpoint, the service, and how to read its answers."""

    ep: Endpoint
    service: ServicePlan
    max_tokens: int
    #: the vLLM version the stack pins, and the fields it sends reasoning text in
    vllm_version: vv.Version
    reasoning_fields: tuple[str, ...]


class Failed(Exception):
    """A check's assertion did not hold."""


def ok_json(resp: Response) -> Any:
    """The answer's JSON; :class:`Failed` with the server's error, or when it is not JSON."""
    error = resp.error()
    if error is not None:
        raise Failed(str(error))
    try:
        return resp.json()
    except ValueError:
        raise Failed(f"not JSON: {resp.text()}") from None
