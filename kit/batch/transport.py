"""Sending batch requests over aiohttp: one POST per attempt, retried with exponential backoff
(tenacity) on connection errors, timeouts, HTTP 429 and 5xx; every other answer is final. What
an answer means (a real one, an error status, an error body sent with HTTP 200) is
:mod:`kit.wire`'s call.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from kit import wire
from kit.batch.input import BatchRequest
from kit.batch.results import (
    CONNECTION_ERROR,
    TIMEOUT,
    error_line,
    retryable_status,
    success_line,
)
from kit.client import Endpoint
from kit.errors import NotReadyError


@dataclass(frozen=True)
class RetryPolicy:
    #: retries after the first attempt, for connection errors, timeouts, 429 and 5xx
    max_retries: int
    #: seconds per request attempt
    timeout: float
    #: first backoff in seconds; doubles per retry (with jitter) up to ``backoff_max``
    backoff_initial: float
    backoff_max: float


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, request id and the JSON body (None if not JSON)."""

    status: int
    request_id: str
    body: Any
    text: str


class Retryable(Exception):
    """A failure worth another attempt."""

    def __init__(
        self,
        code: str,
        message: str,
        answer: Answer | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.answer = answer
        self.retry_after = retry_after


def open_session(endpoint: Endpoint, concurrency: int) -> aiohttp.ClientSession:
    """A session on the service's base url, with the auth header, ``concurrency`` connections."""
    return aiohttp.ClientSession(
        base_url=endpoint.base_url,
        headers=wire.json_headers(endpoint.api_key, body=False),
        connector=aiohttp.TCPConnector(limit=concurrency),
    )


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


async def send_once(session: aiohttp.ClientSession, req: BatchRequest, timeout: float) -> Answer:
    """POST one request. Raises :class:`Retryable` for transport errors, 429 and 5xx."""
    request_id = f"req_{uuid.uuid4().hex}"
    data = json.dumps(req.body, ensure_ascii=False).encode("utf-8")
    headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
    try:
        async with session.post(
            req.url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            raw = await resp.read()
            status, retry_after = resp.status, _retry_after(resp.headers)
    except TimeoutError:
        raise Retryable(TIMEOUT, f"no answer within {timeout:g}s (--timeout)") from None
    except aiohttp.ClientError as exc:
        raise Retryable(CONNECTION_ERROR, f"{type(exc).__name__}: {exc}") from None
    text = raw.decode("utf-8", "replace")
    body = wire.parse_json(raw)
    answer = Answer(status, request_id, body, text)
    if retryable_status(status):
        raise Retryable(f"http_{status}", wire.error_message(body, text), answer, retry_after)
    return answer


def line_for(req: BatchRequest, answer: Answer) -> dict[str, Any]:
    """The output line for a final answer."""
    error = wire.classify(answer.status, answer.body, answer.text)
    if error is None and answer.body is not None:
        return success_line(req.custom_id, answer.request_id, answer.status, answer.body)
    if error is None:
        status = answer.status
        message = f"HTTP {status} without a JSON body: {wire.error_message(None, answer.text)}"
    else:
        status, message = error.code, error.message
        if error.in_body:
            message += f" (HTTP {error.http_status} with an error body)"
        elif status == 401:
            message += "; the service wants an API key: set defaults.api_key_env_file in the stack"
    response = {"status_code": status, "request_id": answer.request_id, "body": answer.body}
    return error_line(req.custom_id, f"http_{status}", message, response)


def exhausted_line(req: BatchRequest, exc: Retryable, attempts: int) -> dict[str, Any]:
    """The output line once every attempt failed with a retryable error."""
    message = f"{exc.message} (after {attempts} attempt{'s' if attempts != 1 else ''})"
    response = None
    if exc.answer is not None:
        a = exc.answer
        response = {"status_code": a.status, "request_id": a.request_id, "body": a.body}
    return error_line(req.custom_id, exc.code, message, response)


def _backoff(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    expo = wait_exponential(multiplier=policy.backoff_initial, max=policy.backoff_max)
    expo += wait_random(0, policy.backoff_initial)

    def wait(state: RetryCallState) -> float:
        base = expo(state)
        exc = state.outcome.exception() if state.outcome else None
        after = getattr(exc, "retry_after", None)
        return max(base, min(after, policy.backoff_max)) if after else base

    return wait


async def run_request(
    session: aiohttp.ClientSession,
    req: BatchRequest,
    policy: RetryPolicy,
    on_retry: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """One request with retries; always returns its output line."""

    def count(_: RetryCallState) -> None:
        if on_retry is not None:
            on_retry()

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_retries + 1),
        wait=_backoff(policy),
        retry=retry_if_exception_type(Retryable),
        before_sleep=count,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                answer = await send_once(session, req, policy.timeout)
    except Retryable as exc:
        return exhausted_line(req, exc, retrying.statistics.get("attempt_number", 1))
    return line_for(req, answer)


async def preflight(session: aiohttp.ClientSession, where: str) -> None:
    """Fail fast with one clear message when the service (``where``) is not up."""
    hint = "start the stack with `kit up STACK` (it waits until every service is ready)"
    try:
        async with session.get(wire.HEALTH, timeout=aiohttp.ClientTimeout(total=10)) as resp:
            status = resp.status
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise NotReadyError(f"{where} is not reachable ({type(exc).__name__})", hint=hint) from None
    if status != 200:
        raise NotReadyError(f"{where} is not ready: GET {wire.HEALTH} answered {status}", hint=hint)
