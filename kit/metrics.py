"""Benchmark figures, defined as ``vllm bench serve`` defines them.

- TTFT: time from sending the request to the first chunk that carries output.
- ITL: the gaps between consecutive output chunks.
- TPOT: (E2E - TTFT) / (output tokens - 1), per request with more than one output token.
- E2E: time from sending the request to the end of the response.
- Request throughput: completed requests / duration; output token throughput: output tokens /
  duration; total token throughput: (prompt + output tokens) / duration. The duration runs from
  the first measured request's start to the last one's end.

Failed requests are counted and left out of every latency and token figure.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kit import kinds
from kit.loadgen import Record

PERCENTILES = (50, 90, 95, 99)


def stats_ms(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values, dtype=float) * 1000.0
    out = {"mean": float(a.mean())}
    for p in PERCENTILES:
        out[f"p{p}"] = float(np.percentile(a, p))
    out["max"] = float(a.max())
    return out


def summarize(records: list[Record], duration: float, kind: str) -> dict[str, Any]:
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.ok]
    failed = len(measured) - len(ok)
    dur = max(duration, 1e-9)
    prompt = sum(r.prompt_tokens or 0 for r in ok)
    out: dict[str, Any] = {
        "requests": len(measured),
        "completed": len(ok),
        "failed": failed,
        "failure_rate": failed / len(measured) if measured else 0.0,
        "duration_s": duration,
        "request_throughput": len(ok) / dur,
        "e2e_ms": stats_ms([r.e2e for r in ok]),
    }
    if kinds.kind(kind).generates:
        output = sum(r.output_tokens or 0 for r in ok)
        sources = {r.count_source for r in ok}
        out.update(
            {
                "output_tokens": output,
                "prompt_tokens": prompt,
                "output_throughput": output / dur,
                "total_token_throughput": (prompt + output) / dur,
                "ttft_ms": stats_ms([r.ttft for r in ok if r.ttft is not None]),
                "tpot_ms": stats_ms(
                    [
                        (r.e2e - r.ttft) / (r.output_tokens - 1)
                        for r in ok
                        if r.ttft is not None and r.output_tokens and r.output_tokens > 1
                    ]
                ),
                "itl_ms": stats_ms([x for r in ok for x in r.itl]),
                "token_count_source": _source(sources),
            }
        )
    else:
        out.update(
            {
                "input_tokens": prompt,
                "input_token_throughput": prompt / dur,
                "token_count_source": _source({r.count_source for r in ok}),
            }
        )
    return out


def _source(sources: set[str | None]) -> str:
    if not sources:
        return "none"
    if sources == {"usage"}:
        return "usage (server-reported)"
    if sources == {"chunks"}:
        return "chunks (no usage from server: one token per output chunk)"
    return "mixed: " + ", ".join(sorted(s or "none" for s in sources))
