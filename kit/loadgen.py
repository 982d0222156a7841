"""The load generator: sends a workload at a fixed concurrency (optionally with Poisson
arrivals) and times every request the way ``vllm bench serve`` does.

Built on aiohttp (and uvloop when installed): against an instant local server on 2 cores it
drives thousands of streamed requests per second, so the client is never what is measured
(``bench/client_speed.py``). The hot path touches bytes only: :class:`kit.wire.SSESplitter`
cuts the stream into events, an event "carries output" when :func:`kit.wire.carries_output`
finds a non-empty content/reasoning/text field (however the JSON is spaced), and JSON is parsed
only for error events.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from kit import wire
from kit.workload import Workload

ERROR_BODY_LIMIT = 2000
#: the hot path's byte searches (:func:`kit.wire.carries_output`, :func:`kit.wire.has_usage`)
_output = wire.OUTPUT_RE.search
_usage = wire.USAGE_RE.search


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
    headers |= wire.auth_header(target.api_key)
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
    """One streamed request: output events set TTFT and ITL, the usage event gives the token
    counts, an error event fails it. Locals only in the loop: it runs once per event."""
    start = clock()
    rec.start = start
    sse = wire.SSESplitter()
    last: float | None = None
    events = chunks = 0
    usage: bytes | None = None
    first: bytes | None = None  # the first event without output or usage, for the message
    head = b""  # the stream's first bytes, for the message
    try:
        async with sess.post(url, data=body, headers=headers) as resp:
            rec.status = resp.status
            if resp.status != 200:
                _http_error(rec, await resp.read())
                rec.e2e = clock() - start
                return
            content = resp.content
            while True:
                data = await content.readany()
                now = clock()
                if not head:
                    head = data[:300]
                got = sse.feed(data) if data else sse.close()
                events += len(got)
                for ev in got:
                    if _output(ev):
                        if last is None:
                            rec.ttft = now - start
                        else:
                            rec.itl.append(now - last)
                        last = now
                        chunks += 1
                    elif _usage(ev):
                        usage = ev
                    else:
                        first = first or ev
                        err = wire.sse_error(ev)
                        if err is not None:
                            rec.error = f"error event in stream (code {err.code}): " + _text(ev)
                if not data:
                    break
        rec.e2e = clock() - start
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        rec.e2e = clock() - start
        rec.error = f"{type(exc).__name__}: {exc}"
        return
    if rec.error is not None:
        return
    if usage is not None:
        rec.output_tokens = wire.int_field(usage, "completion_tokens")
        rec.prompt_tokens = wire.int_field(usage, "prompt_tokens")
        rec.count_source = "usage"
    else:
        rec.output_tokens, rec.count_source = chunks, "chunks"
    if chunks == 0:
        rec.error = _no_output(events, first, head)
        return
    rec.ok = True


def _no_output(events: int, first: bytes | None, head: bytes) -> str:
    """Why a stream counts as failed without output: what it held instead."""
    if events == 0:
        return f"no SSE data event in the stream; it began: {_text(head, 300)!r}"
    fields = "/".join(wire.OUTPUT_FIELDS)
    seen = f"; the first: {_text(first, 300)}" if first is not None else ""
    return f"no output field ({fields}) in {events} events{seen}"


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
    if _http_error(rec, payload):
        return
    rec.prompt_tokens = wire.int_field(payload, "prompt_tokens")
    if rec.prompt_tokens is None:
        rec.prompt_tokens = wire.int_field(payload, "total_tokens")
    rec.output_tokens = wire.int_field(payload, "completion_tokens")
    rec.count_source = "usage" if rec.prompt_tokens is not None else None
    rec.ok = True


def _http_error(rec: Record, payload: bytes) -> bool:
    """Record the answer's error, if it is one (an error status, or an error body sent with
    HTTP 200); the error text keeps the body as sent."""
    err = wire.raw_error(rec.status, payload)
    if err is None:
        return False
    how = f" with an error body (code {err.code})" if err.in_body else ""
    rec.error = f"HTTP {rec.status}{how}: " + _text(payload)
    return True


def _text(blob: bytes | None, limit: int = ERROR_BODY_LIMIT) -> str:
    return (blob or b"")[:limit].decode("utf-8", "replace")


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
