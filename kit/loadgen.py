"""The load generator: sends a workload at a fixed concurrency (optionally with Poisson
arrivals) and times every request the way ``vllm bench serve`` does.

Built on aiohttp (and uvloop when installed): against an instant local server on 2 cores it
drives thousands of streamed requests per second, so the client is never what is measured
(``bench/client_speed.py``). The hot path touches bytes only: SSE events are split by hand, an
event "carries output" when a regex finds a non-empty content/reasoning/text field, and JSON is
parsed once per request, for the usage chunk.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from kit.workload import Workload

#: an SSE event with generated output (chat deltas, reasoning, or completions text)
_OUTPUT = re.compile(rb'"(?:content|reasoning_content|reasoning|text)":"(?!")')
_USAGE = re.compile(rb'"usage":\{')
_INT = {
    key: re.compile(rb'"' + key.encode() + rb'":(\d+)')
    for key in ("prompt_tokens", "completion_tokens", "total_tokens")
}
ERROR_BODY_LIMIT = 2000


@dataclass
class Record:
    """One request. Times are seconds; ``start`` is relative to the run's start."""

    index: int
    start: float = 0.0
    ok: bool = False
    status: int = 0
    e2e: float = 0.0
    ttft: float | None = None
    itl: list[float] = field(default_factory=list)
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    #: where output_tokens came from: "usage" (the server's count) or "chunks" (one per event)
    count_source: str | None = None
    error: str | None = None
    warmup: bool = False
    target: str = ""


@dataclass(frozen=True)
class Target:
    name: str
    base_url: str
    served_name: str
    api_key: str | None = None


@dataclass
class RunState:
    """Live counters for progress displays."""

    done: int = 0
    failed: int = 0
    total: int = 0


def install_fast_loop() -> bool:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - optional
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def session(read_timeout: float) -> aiohttp.ClientSession:
    """Unlimited connections: each run's workers are what caps concurrency."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=3600, enable_cleanup_closed=True),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=read_timeout),
        skip_auto_headers=("User-Agent",),
    )


async def run(
    sess: aiohttp.ClientSession,
    target: Target,
    workload: Workload,
    *,
    parallel: int,
    number: int,
    rate: float | None = None,
    warmup: int = 0,
    seed: int = 0,
    state: RunState | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[list[Record], float]:
    """Send ``warmup`` then ``number`` requests with at most ``parallel`` in flight.

    Returns every record (warm-up ones flagged) and the measured duration: from the first
    measured request's start to the last one's end.
    """
    url = target.base_url + workload.path
    headers = {"Content-Type": "application/json", "Accept": "*/*"}
    if target.api_key:
        headers["Authorization"] = f"Bearer {target.api_key}"
    send = _stream if workload.stream else _plain
    state = state or RunState()
    state.total = number

    async def phase(count: int, offset: int, is_warmup: bool) -> list[Record]:
        records = [
            Record(index=offset + i, warmup=is_warmup, target=target.name) for i in range(count)
        ]
        arrivals = _arrivals(count, rate, seed + offset)
        nxt = 0
        t0 = clock()

        async def worker() -> None:
            nonlocal nxt
            while nxt < count:
                i = nxt
                nxt += 1
                if arrivals is not None:
                    delay = t0 + arrivals[i] - clock()
                    if delay > 0:
                        await asyncio.sleep(delay)
                rec = records[i]
                await send(sess, url, headers, workload.body(rec.index), rec, clock)
                rec.start -= t0
                if not is_warmup:
                    state.done += 1
                    state.failed += not rec.ok

        await asyncio.gather(*(worker() for _ in range(min(parallel, count))))
        return records

    warm = await phase(warmup, 0, True) if warmup else []
    measured = await phase(number, warmup, False)
    if measured:
        first = min(r.start for r in measured)
        last = max(r.start + r.e2e for r in measured)
        duration = last - first
    else:
        duration = 0.0
    return warm + measured, duration


def _arrivals(count: int, rate: float | None, seed: int) -> list[float] | None:
    """Poisson arrival times (exponential gaps) for ``rate`` requests/s."""
    if rate is None or rate <= 0:
        return None
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(count):
        out.append(t)
        t += rng.expovariate(rate)
    return out


async def _stream(
    sess: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body: bytes,
    rec: Record,
    clock: Callable[[], float],
) -> None:
    start = clock()
    rec.start = start
    last = None
    chunks = 0
    usage: bytes | None = None
    try:
        async with sess.post(url, data=body, headers=headers) as resp:
            rec.status = resp.status
            if resp.status != 200:
                rec.error = f"HTTP {resp.status}: " + (await resp.read())[:ERROR_BODY_LIMIT].decode(
                    "utf-8", "replace"
                )
                rec.e2e = clock() - start
                return
            buf = b""
            async for data in resp.content.iter_any():
                now = clock()
                buf += data
                while True:
                    cut = buf.find(b"\n\n")
                    if cut < 0:
                        break
                    ev, buf = buf[:cut], buf[cut + 2 :]
                    if _OUTPUT.search(ev):
                        if last is None:
                            rec.ttft = now - start
                        else:
                            rec.itl.append(now - last)
                        last = now
                        chunks += 1
                    elif _USAGE.search(ev):
                        usage = ev
                    elif ev.startswith(b'data: {"error"') or b'"object":"error"' in ev:
                        rec.error = "error event in stream: " + ev[6:ERROR_BODY_LIMIT].decode(
                            "utf-8", "replace"
                        )
        rec.e2e = clock() - start
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        rec.e2e = clock() - start
        rec.error = f"{type(exc).__name__}: {exc}"
        return
    if rec.error is not None:
        return
    if usage is not None:
        rec.output_tokens = _int(usage, "completion_tokens")
        rec.prompt_tokens = _int(usage, "prompt_tokens")
        rec.count_source = "usage"
    else:
        rec.output_tokens, rec.count_source = chunks, "chunks"
    if chunks == 0:
        rec.error = "stream ended without output"
        return
    rec.ok = True


async def _plain(
    sess: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body: bytes,
    rec: Record,
    clock: Callable[[], float],
) -> None:
    start = clock()
    rec.start = start
    try:
        async with sess.post(url, data=body, headers=headers) as resp:
            rec.status = resp.status
            payload = await resp.read()
        rec.e2e = clock() - start
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        rec.e2e = clock() - start
        rec.error = f"{type(exc).__name__}: {exc}"
        return
    if rec.status != 200:
        rec.error = f"HTTP {rec.status}: " + payload[:ERROR_BODY_LIMIT].decode("utf-8", "replace")
        return
    if b'"error"' in payload[:20] or payload.startswith(b'{"object":"error"'):
        rec.error = "error body: " + payload[:ERROR_BODY_LIMIT].decode("utf-8", "replace")
        return
    rec.prompt_tokens = _int(payload, "prompt_tokens")
    if rec.prompt_tokens is None:
        rec.prompt_tokens = _int(payload, "total_tokens")
    rec.output_tokens = _int(payload, "completion_tokens")
    rec.count_source = "usage" if rec.prompt_tokens is not None else None
    rec.ok = True


def _int(blob: bytes, key: str) -> int | None:
    m = _INT[key].search(blob)
    return int(m[1]) if m else None


def error_summary(records: list[Record], limit: int = 3) -> list[str]:
    """The first distinct error texts, for printing."""
    seen: list[str] = []
    for r in records:
        if r.error and r.error not in seen:
            seen.append(r.error)
            if len(seen) >= limit:
                break
    return seen


def record_json(r: Record, run: str) -> str:
    return json.dumps(
        {
            "run": run,
            "target": r.target,
            "index": r.index,
            "warmup": r.warmup,
            "start_s": round(r.start, 6),
            "ok": r.ok,
            "status": r.status,
            "e2e_s": round(r.e2e, 6),
            "ttft_s": None if r.ttft is None else round(r.ttft, 6),
            "itl_s": [round(x, 6) for x in r.itl],
            "output_tokens": r.output_tokens,
            "prompt_tokens": r.prompt_tokens,
            "count_source": r.count_source,
            "error": r.error,
        },
        ensure_ascii=False,
    )
