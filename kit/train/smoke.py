"""``kit smoke`` checks for the LoRA adapters a service serves: ``/v1/models`` lists each one,
and each answers a chat request under its own model name."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kit import wire
from kit.smoke_target import Failed, Target, ok_json
from kit.train.serving import adapters_in

if TYPE_CHECKING:
    from kit.service_plan import ServicePlan

PROMPT = "Say hello in one short sentence."


def adapter_checks(s: ServicePlan) -> list[tuple[str, Callable[[Target], str]]]:
    return [(f"adapter {name}", _check(name)) for name in adapters_in(s.engine_args)]


def _check(adapter: str) -> Callable[[Target], str]:
    def check(t: Target) -> str:
        ids = [m.get("id") for m in ok_json(t.ep.get(wire.MODELS, timeout=10)).get("data", [])]
        if adapter not in ids:
            raise Failed(f"adapter {adapter!r} not in /v1/models {ids}")
        body: dict[str, Any] = {
            "model": adapter,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": min(t.max_tokens, 32),
            "temperature": 0,
        }
        data = ok_json(t.ep.post(wire.CHAT, body, timeout=120))
        text = (data.get("choices") or [{}])[0].get("message", {}).get("content") or ""
        if not text.strip():
            raise Failed(f"adapter {adapter!r} answered with no text")
        return f"listed, answers: {text.strip()[:40]!r}"

    return check
