"""Prove every endpoint answers correctly: the source notes' curl checks, as assertions.

Each check is a real request with its latency; a check fails with a reason, never a traceback.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kit import kinds, wire
from kit.client import PortClosed, StreamError, endpoint_for
from kit.service_plan import ServicePlan
from kit.smoke_target import Failed, Target, ok_json
from kit.stack_plan import Plan
from kit.train.smoke import adapter_checks

# The source notes' own examples.
CHAT_PROMPT = "甲乙两班共有学生98人，甲班比乙班多6人，求两班各有多少人？"
EMBED_INPUTS = ["What is the capital of China?", "北京是中国的首都。", "A man is eating pasta."]
RERANK_QUERY = "A man is eating pasta."
RERANK_DOCS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
]


@dataclass(frozen=True)
class Check:
    service: str
    name: str
    ok: bool
    seconds: float
    detail: str


def smoke(plan: Plan, services: list[str] | None = None, *, max_tokens: int = 64) -> list[Check]:
    chosen = [plan.service(n) for n in services] if services else list(plan.services)
    version = plan.stack.defaults.version
    out: list[Check] = []
    for s in chosen:
        t = Target(endpoint_for(plan, s), s, max_tokens, version, wire.reasoning_fields(version))
        for name, fn in checks_for(s):
            out.append(run_check(s.name, name, lambda fn=fn, t=t: fn(t)))
        for name, fn in adapter_checks(s):  # the jobs' LoRA adapters it serves (kit.train)
            out.append(run_check(s.name, name, lambda fn=fn, t=t: fn(t)))
    return out


def run_check(service: str, name: str, fn: Callable[[], str]) -> Check:
    t0 = time.perf_counter()
    try:
        detail = fn()
        ok = True
    except Failed as exc:
        ok, detail = False, str(exc)
    except PortClosed as exc:
        ok, detail = False, f"not listening ({exc}); is the stack up? `kit status`"
    except StreamError as exc:
        ok, detail = False, str(exc)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    return Check(service, name, ok, time.perf_counter() - t0, detail)


CheckFn = Callable[[Target], str]


def checks_for(s: ServicePlan) -> list[tuple[str, CheckFn]]:
    """The checks of the service's kind (:attr:`kit.kinds.Kind.smoke_checks`), in order."""
    return [(name, CHECKS[name]) for name in kinds.kind(s.kind).smoke_checks]


# --- checks --------------------------------------------------------------------------------


def _ensure(cond: bool, msg: str) -> None:
    if not cond:
        raise Failed(msg)


def check_health(t: Target) -> str:
    r = t.ep.get(wire.HEALTH, timeout=10)
    _ensure(r.status == 200, f"{wire.HEALTH} answered HTTP {r.status}")
    return "200"


def check_models(t: Target) -> str:
    data = ok_json(t.ep.get(wire.MODELS, timeout=10))
    ids = [m.get("id") for m in data.get("data", [])]
    name = t.service.served_name
    _ensure(name in ids, f"served name {name!r} not in {ids}")
    return f"lists {name}"


def _chat_body(t: Target, *, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": t.service.served_name,
        "messages": [{"role": "user", "content": CHAT_PROMPT}],
        "max_tokens": t.max_tokens,
        "temperature": 0,
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def check_chat(t: Target) -> str:
    data = ok_json(t.ep.post(wire.CHAT, _chat_body(t, stream=False)))
    choices = data.get("choices") or []
    _ensure(len(choices) == 1, f"expected 1 choice, got {len(choices)}")
    msg = choices[0].get("message") or {}
    content = msg.get("content") or ""
    key = _reasoning_key(t, msg)
    _ensure(bool(content or key), "empty message: no content and no reasoning")
    usage = data.get("usage") or {}
    _ensure(usage.get("completion_tokens", 0) > 0, f"usage has no completion tokens: {usage}")
    detail = f"{usage['completion_tokens']} tokens, finish={choices[0].get('finish_reason')}"
    if t.service.reasoning_field is not None:
        _ensure(key is not None, f"reasoning parser set but no {' or '.join(t.reasoning_fields)}")
        detail += f", reasoning in '{key}'"
    return detail


def check_chat_stream(t: Target) -> str:
    chunks = 0
    ttft = None
    done_last = False
    usage: dict[str, Any] | None = None
    reasoning_seen = False
    for at, data in t.ep.stream(wire.CHAT, _chat_body(t, stream=True)):
        _ensure(not done_last, "data after [DONE]")
        if data == wire.DONE.decode():
            done_last = True
            continue
        obj = json.loads(data)
        error = wire.classify(200, obj)
        if error is not None:
            raise Failed(f"error event in the stream (code {error.code}): {error.message}")
        for ch in obj.get("choices") or []:
            delta = ch.get("delta") or {}
            reasoning = _reasoning_key(t, delta) is not None
            if delta.get("content") or reasoning:
                chunks += 1
                ttft = at if ttft is None else ttft
            reasoning_seen = reasoning_seen or reasoning
        if obj.get("usage"):  # vLLM: with no choices; LiteLLM: with an empty delta
            usage = obj["usage"]
    _ensure(done_last, "stream did not end with data: [DONE]")
    _ensure(chunks > 0, "no chunk carried output")
    _ensure(usage is not None, "no usage chunk (stream_options.include_usage)")
    assert usage is not None
    _ensure(usage.get("completion_tokens", 0) > 0, f"usage chunk without tokens: {usage}")
    if t.service.reasoning_field is not None:
        _ensure(reasoning_seen, "reasoning parser set but no reasoning in the stream")
    return f"{chunks} chunks, TTFT {1000 * (ttft or 0):.0f} ms, usage {usage['completion_tokens']} tokens"


def _reasoning_key(t: Target, msg: dict[str, Any]) -> str | None:
    """The field of ``msg`` with reasoning text, among those the pinned vLLM sends. Reasoning
    under a name only other versions use fails: clients read the version's name."""
    key = next((k for k in t.reasoning_fields if msg.get(k)), None)
    if key is None:
        other = next((k for k in wire.reasoning_fields() if msg.get(k)), None)
        _ensure(
            other is None,
            f"reasoning in '{other}', but vLLM {t.vllm_version} sends it in "
            f"{' and '.join(repr(f) for f in t.reasoning_fields)}: does defaults.vllm_version "
            "match the image?",
        )
    return key


def _vectors(data: Any, n: int) -> list[list[float]]:
    items = sorted(data.get("data") or [], key=lambda d: d.get("index", 0))
    _ensure(len(items) == n, f"expected {n} vectors, got {len(items)}")
    _ensure([d.get("index") for d in items] == list(range(n)), "indices are not 0..n-1")
    vecs = [d.get("embedding") for d in items]
    _ensure(all(isinstance(v, list) and v for v in vecs), "an embedding is empty or not a list")
    dims = {len(v) for v in vecs}
    _ensure(len(dims) == 1, f"vectors differ in dimension: {sorted(dims)}")
    _ensure(
        all(isinstance(x, int | float) and math.isfinite(x) for v in vecs for x in v),
        "an embedding holds a non-finite number",
    )
    return vecs


def _embed(t: Target, inputs: list[str] | str) -> Any:
    return ok_json(t.ep.post(wire.EMBEDDINGS, {"model": t.service.served_name, "input": inputs}))


def check_embeddings(t: Target) -> str:
    vecs = _vectors(_embed(t, EMBED_INPUTS), len(EMBED_INPUTS))
    return f"{len(vecs)} x {len(vecs[0])}"


def check_embedding_single(t: Target) -> str:
    return f"1 x {len(_vectors(_embed(t, EMBED_INPUTS[0]), 1)[0])}"


def _rerank(t: Target, top_n: int | None = None) -> list[dict[str, Any]]:
    body: dict[str, Any] = {
        "model": t.service.served_name,
        "query": RERANK_QUERY,
        "documents": RERANK_DOCS,
    }
    if top_n is not None:
        body["top_n"] = top_n
    results = ok_json(t.ep.post(wire.RERANK, body)).get("results")
    _ensure(isinstance(results, list), "no results list")
    scores = [r.get("relevance_score") for r in results]
    _ensure(
        all(isinstance(x, int | float) and math.isfinite(x) for x in scores),
        f"non-numeric scores: {scores}",
    )
    _ensure(scores == sorted(scores, reverse=True), f"not sorted by relevance: {scores}")
    return results


def check_rerank(t: Target) -> str:
    results = _rerank(t)
    idx = [r.get("index") for r in results]
    _ensure(
        sorted(idx) == list(range(len(RERANK_DOCS))), f"indices {idx} are not each document once"
    )
    best = RERANK_DOCS[idx[0]]
    return f"{len(idx)} ranked, best: {best!r}"


def check_rerank_top_n(t: Target) -> str:
    full = [r["index"] for r in _rerank(t)]
    top = [r.get("index") for r in _rerank(t, top_n=2)]
    _ensure(len(top) == 2, f"top_n=2 returned {len(top)} results")
    _ensure(top == full[:2], f"top_n=2 gave {top}, the full ranking starts {full[:2]}")
    return "2 of 5"


#: Every smoke check by name; a kind lists the ones it runs (:attr:`kit.kinds.Kind.smoke_checks`).
CHECKS: dict[str, CheckFn] = {
    "health": check_health,
    "models": check_models,
    "chat": check_chat,
    "chat stream": check_chat_stream,
    "embeddings": check_embeddings,
    "embedding single": check_embedding_single,
    "rerank": check_rerank,
    "rerank top_n": check_rerank_top_n,
}
