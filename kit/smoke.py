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

from kit.client import Endpoint, PortClosed, StreamError, endpoint_for
from kit.plan import Plan, ServicePlan

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
REASONING_FIELDS = ("reasoning_content", "reasoning")


@dataclass(frozen=True)
class Check:
    service: str
    name: str
    ok: bool
    seconds: float
    detail: str


class Failed(Exception):
    """A check's assertion did not hold."""


def smoke(plan: Plan, services: list[str] | None = None, *, max_tokens: int = 64) -> list[Check]:
    chosen = [plan.service(n) for n in services] if services else list(plan.services)
    out: list[Check] = []
    for s in chosen:
        ep = endpoint_for(plan, s)
        for name, fn in checks_for(s, max_tokens):
            out.append(run_check(s.name, name, lambda fn=fn, ep=ep, s=s: fn(ep, s)))
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


def checks_for(
    s: ServicePlan, max_tokens: int
) -> list[tuple[str, Callable[[Endpoint, ServicePlan], str]]]:
    common = [("health", check_health), ("models", check_models)]
    if s.kind == "chat":
        chat = [
            ("chat", lambda ep, s: check_chat(ep, s, max_tokens)),
            ("chat stream", lambda ep, s: check_chat_stream(ep, s, max_tokens)),
        ]
        return common + chat
    if s.kind == "embed":
        return [
            *common,
            ("embeddings", check_embeddings),
            ("embedding single", check_embedding_single),
        ]
    return [*common, ("rerank", check_rerank), ("rerank top_n", check_rerank_top_n)]


# --- checks --------------------------------------------------------------------------------


def _ensure(cond: bool, msg: str) -> None:
    if not cond:
        raise Failed(msg)


def _ok_json(resp: Any) -> Any:
    _ensure(resp.status == 200, f"HTTP {resp.status}: {resp.text()}")
    try:
        return resp.json()
    except ValueError:
        raise Failed(f"not JSON: {resp.text()}") from None


def check_health(ep: Endpoint, s: ServicePlan) -> str:
    r = ep.get("/health", timeout=10)
    _ensure(r.status == 200, f"/health answered HTTP {r.status}")
    return "200"


def check_models(ep: Endpoint, s: ServicePlan) -> str:
    data = _ok_json(ep.get("/v1/models", timeout=10))
    ids = [m.get("id") for m in data.get("data", [])]
    _ensure(s.served_name in ids, f"served name {s.served_name!r} not in {ids}")
    return f"lists {s.served_name}"


def _chat_body(s: ServicePlan, max_tokens: int, *, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": s.served_name,
        "messages": [{"role": "user", "content": CHAT_PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def check_chat(ep: Endpoint, s: ServicePlan, max_tokens: int) -> str:
    data = _ok_json(ep.post("/v1/chat/completions", _chat_body(s, max_tokens, stream=False)))
    choices = data.get("choices") or []
    _ensure(len(choices) == 1, f"expected 1 choice, got {len(choices)}")
    msg = choices[0].get("message") or {}
    content = msg.get("content") or ""
    reasoning = _reasoning(msg)
    _ensure(bool(content or reasoning), "empty message: no content and no reasoning")
    usage = data.get("usage") or {}
    _ensure(usage.get("completion_tokens", 0) > 0, f"usage has no completion tokens: {usage}")
    detail = f"{usage['completion_tokens']} tokens, finish={choices[0].get('finish_reason')}"
    if s.reasoning_field is not None:
        _ensure(bool(reasoning), f"reasoning parser set but no {' or '.join(REASONING_FIELDS)}")
        detail += f", reasoning in '{_reasoning_key(msg)}'"
    return detail


def check_chat_stream(ep: Endpoint, s: ServicePlan, max_tokens: int) -> str:
    body = _chat_body(s, max_tokens, stream=True)
    chunks = 0
    ttft = None
    done_last = False
    usage: dict[str, Any] | None = None
    reasoning_seen = False
    for t, data in ep.stream("/v1/chat/completions", body):
        _ensure(not done_last, "data after [DONE]")
        if data == "[DONE]":
            done_last = True
            continue
        obj = json.loads(data)
        for ch in obj.get("choices") or []:
            delta = ch.get("delta") or {}
            if delta.get("content") or _reasoning(delta):
                chunks += 1
                ttft = t if ttft is None else ttft
            reasoning_seen = reasoning_seen or bool(_reasoning(delta))
        if obj.get("usage") and not obj.get("choices"):
            usage = obj["usage"]
    _ensure(done_last, "stream did not end with data: [DONE]")
    _ensure(chunks > 0, "no chunk carried output")
    _ensure(usage is not None, "no usage chunk (stream_options.include_usage)")
    assert usage is not None
    _ensure(usage.get("completion_tokens", 0) > 0, f"usage chunk without tokens: {usage}")
    if s.reasoning_field is not None:
        _ensure(reasoning_seen, "reasoning parser set but no reasoning in the stream")
    return f"{chunks} chunks, TTFT {1000 * (ttft or 0):.0f} ms, usage {usage['completion_tokens']} tokens"


def _reasoning(msg: dict[str, Any]) -> str:
    return next((msg[k] for k in REASONING_FIELDS if msg.get(k)), "")


def _reasoning_key(msg: dict[str, Any]) -> str:
    return next((k for k in REASONING_FIELDS if msg.get(k)), "?")


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


def check_embeddings(ep: Endpoint, s: ServicePlan) -> str:
    data = _ok_json(ep.post("/v1/embeddings", {"model": s.served_name, "input": EMBED_INPUTS}))
    vecs = _vectors(data, len(EMBED_INPUTS))
    return f"{len(vecs)} x {len(vecs[0])}"


def check_embedding_single(ep: Endpoint, s: ServicePlan) -> str:
    data = _ok_json(ep.post("/v1/embeddings", {"model": s.served_name, "input": EMBED_INPUTS[0]}))
    return f"1 x {len(_vectors(data, 1)[0])}"


def _rerank(ep: Endpoint, s: ServicePlan, top_n: int | None = None) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"model": s.served_name, "query": RERANK_QUERY, "documents": RERANK_DOCS}
    if top_n is not None:
        body["top_n"] = top_n
    results = _ok_json(ep.post("/v1/rerank", body)).get("results")
    _ensure(isinstance(results, list), "no results list")
    scores = [r.get("relevance_score") for r in results]
    _ensure(
        all(isinstance(x, int | float) and math.isfinite(x) for x in scores),
        f"non-numeric scores: {scores}",
    )
    _ensure(scores == sorted(scores, reverse=True), f"not sorted by relevance: {scores}")
    return results


def check_rerank(ep: Endpoint, s: ServicePlan) -> str:
    results = _rerank(ep, s)
    idx = [r.get("index") for r in results]
    _ensure(
        sorted(idx) == list(range(len(RERANK_DOCS))), f"indices {idx} are not each document once"
    )
    best = RERANK_DOCS[idx[0]]
    return f"{len(idx)} ranked, best: {best!r}"


def check_rerank_top_n(ep: Endpoint, s: ServicePlan) -> str:
    full = [r["index"] for r in _rerank(ep, s)]
    top = [r.get("index") for r in _rerank(ep, s, top_n=2)]
    _ensure(len(top) == 2, f"top_n=2 returned {len(top)} results")
    _ensure(top == full[:2], f"top_n=2 gave {top}, the full ranking starts {full[:2]}")
    return "2 of 5"
