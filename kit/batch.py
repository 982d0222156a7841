"""``kit batch``: run an OpenAI-format batch file against one service of a running stack.

The input is what ``vllm run-batch`` and the OpenAI Batch API read: one JSON object per line
with ``custom_id``, ``method``, ``url`` and ``body``. The output has the same shape as their
output files: one line per request with its ``custom_id`` and either the response or the error.

Requests run with bounded concurrency (an :class:`asyncio.Semaphore`) over aiohttp. Connection
errors, timeouts, HTTP 429 and 5xx are retried with exponential backoff (tenacity); other 4xx
answers are recorded as that line's error at once.

Every result is appended to OUTPUT as one complete line with one ``write`` call, so an
interrupted run leaves a valid file. Run the same command again to resume: lines that
succeeded (and lines the server refused with a 4xx, unless ``retry_failed``) are skipped;
lines that failed with a retryable error, and a truncated last line, are dropped and redone.
Each custom_id ends up in OUTPUT exactly once.

Input lines that are not a valid request go to ``OUTPUT.errors.jsonl`` (same line shape, error
code ``invalid_request``, with the line number); that file is rewritten on every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from kit.client import Endpoint, endpoint_for
from kit.errors import KitError, NotReadyError
from kit.plan import Plan, ServicePlan

#: Batch urls each service kind serves (the ones ``vllm run-batch`` accepts).
URLS_BY_KIND: dict[str, tuple[str, ...]] = {
    "chat": ("/v1/chat/completions",),
    "embed": ("/v1/embeddings",),
    "rerank": ("/v1/rerank", "/rerank", "/v2/rerank", "/v1/score", "/score"),
}
KIND_OF_URL: dict[str, str] = {u: k for k, urls in URLS_BY_KIND.items() for u in urls}

INVALID = "invalid_request"
CONNECTION_ERROR = "connection_error"
TIMEOUT = "timeout"
#: Error codes recorded without an HTTP response: always retried on resume.
TRANSPORT_CODES = (CONNECTION_ERROR, TIMEOUT)


# --- options, requests, results ---------------------------------------------------------------


@dataclass(frozen=True)
class BatchOptions:
    concurrency: int = 16
    #: retries after the first attempt, for connection errors, timeouts, 429 and 5xx
    max_retries: int = 5
    #: seconds per request attempt
    timeout: float = 600.0
    #: first backoff in seconds; doubles per retry (with jitter) up to ``backoff_max``
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    #: on resume, also redo lines the server refused with a 4xx
    retry_failed: bool = False

    def check(self) -> None:
        if self.concurrency < 1:
            raise KitError(f"--concurrency must be at least 1, not {self.concurrency}")
        if self.max_retries < 0:
            raise KitError(f"--max-retries must be 0 or more, not {self.max_retries}")
        if self.timeout <= 0:
            raise KitError(f"--timeout must be a positive number of seconds, not {self.timeout}")


@dataclass(frozen=True)
class BatchRequest:
    line: int
    custom_id: str
    url: str
    body: dict[str, Any]
    #: ``body.model`` as given (None: omitted), before the kit set it to the served name
    model_given: str | None


@dataclass(frozen=True)
class InvalidLine:
    line: int
    custom_id: str | None
    message: str  # starts with "line N: "

    def to_json(self) -> dict[str, Any]:
        err = {"code": INVALID, "message": self.message, "line": self.line}
        return {"id": new_id(), "custom_id": self.custom_id, "response": None, "error": err}


def new_id() -> str:
    return f"batch_req_{uuid.uuid4().hex}"


def success_line(custom_id: str, request_id: str, status: int, body: Any) -> dict[str, Any]:
    response = {"status_code": status, "request_id": request_id, "body": body}
    return {"id": new_id(), "custom_id": custom_id, "response": response, "error": None}


def error_line(
    custom_id: str, code: str, message: str, response: dict[str, Any] | None = None
) -> dict[str, Any]:
    err = {"code": code, "message": message}
    return {"id": new_id(), "custom_id": custom_id, "response": response, "error": err}


def errors_path_for(output: Path) -> Path:
    """Where invalid input lines go: ``out.jsonl`` -> ``out.errors.jsonl``."""
    stem = output.stem if output.suffix == ".jsonl" else output.name
    return output.with_name(f"{stem}.errors.jsonl")


# --- reading the input ------------------------------------------------------------------------


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _kind_mismatch(url: str, kind: str, service: ServicePlan) -> str:
    serves = ", ".join(URLS_BY_KIND[service.kind])
    return (
        f"url {url} is {_a(kind)} request, but service '{service.name}' is {_a(service.kind)} "
        f"service (it serves {serves}); send {kind} requests to {_a(kind)} service of the stack"
    )


def _check_url(url: object, service: ServicePlan) -> str | None:
    if not isinstance(url, str) or not url:
        return 'url is missing; set it to the endpoint path, e.g. "/v1/chat/completions"'
    kind = KIND_OF_URL.get(url)
    if kind is None:
        known = ", ".join(URLS_BY_KIND.get(service.kind, ()))
        return f"url {url!r} is not a batch endpoint; service '{service.name}' ({service.kind}) serves {known}"
    if kind != service.kind:
        return _kind_mismatch(url, kind, service)
    return None


def _check_fields(obj: dict[str, Any], service: ServicePlan) -> str | None:
    method = obj.get("method")
    if not isinstance(method, str) or method.upper() != "POST":
        return f'method {method!r} is not supported; batch requests use "method": "POST"'
    problem = _check_url(obj.get("url"), service)
    if problem:
        return problem
    body = obj.get("body")
    if body is None:
        return 'body is missing; put the request JSON under "body"'
    if not isinstance(body, dict):
        return f"body must be a JSON object (the request JSON), not {type(body).__name__}"
    if body.get("stream"):
        return 'body sets "stream": true; batch requests cannot stream: remove it'
    return None


def parse_line(raw: bytes, line: int, service: ServicePlan) -> BatchRequest | InvalidLine | None:
    """One input line as a request for ``service``; None for a blank line."""
    if not raw.strip():
        return None
    try:
        obj = json.loads(raw)
    except UnicodeDecodeError:
        return InvalidLine(line, None, f"line {line}: not UTF-8 text; save the file as UTF-8")
    except json.JSONDecodeError as exc:
        return InvalidLine(
            line,
            None,
            f"line {line}: not valid JSON ({exc.msg} at column {exc.colno}); "
            "each line must be one JSON object",
        )
    if not isinstance(obj, dict):
        return InvalidLine(
            line,
            None,
            f"line {line}: expected a JSON object with custom_id, method, url and body, "
            f"not {type(obj).__name__}",
        )
    cid = obj.get("custom_id")
    if not isinstance(cid, str) or not cid:
        what = "missing" if cid is None else f"{cid!r}, not a non-empty string"
        return InvalidLine(
            line,
            None,
            f"line {line}: custom_id is {what}; every request needs a unique string custom_id",
        )
    problem = _check_fields(obj, service)
    if problem:
        return InvalidLine(line, cid, f"line {line}: custom_id {cid!r}: {problem}")
    body = dict(obj["body"])
    given = body.get("model")
    body["model"] = service.served_name
    return BatchRequest(line, cid, obj["url"], body, given if isinstance(given, str) else None)


def _input_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as f:
        yield from enumerate(f, 1)


@dataclass
class InputScan:
    """What the input holds, without keeping the request bodies in memory."""

    #: line number -> custom_id of each valid request, in input order
    requests: dict[int, str] = field(default_factory=dict)
    invalid: list[InvalidLine] = field(default_factory=list)
    #: requests whose body.model was omitted / named another model
    model_omitted: int = 0
    model_other: Counter[str] = field(default_factory=Counter)


def scan_input(path: Path, service: ServicePlan) -> InputScan:
    """Validate every line (and custom_id uniqueness); the bodies are read again when sent."""
    scan = InputScan()
    first_seen: dict[str, int] = {}
    for line, raw in _input_lines(path):
        got = parse_line(raw, line, service)
        if got is None:
            continue
        cid = got.custom_id
        if cid is not None and cid in first_seen:
            scan.invalid.append(
                InvalidLine(
                    line,
                    cid,
                    f"line {line}: custom_id {cid!r} is already used on line {first_seen[cid]}; "
                    "custom_ids must be unique in a batch",
                )
            )
            continue
        if cid is not None:
            first_seen[cid] = line
        if isinstance(got, InvalidLine):
            scan.invalid.append(got)
            continue
        scan.requests[line] = cid
        if got.model_given is None:
            scan.model_omitted += 1
        elif got.model_given != service.served_name:
            scan.model_other[got.model_given] += 1
    return scan


def iter_requests(
    path: Path, service: ServicePlan, lines: frozenset[int]
) -> Iterator[BatchRequest]:
    """The requests on ``lines`` (validated by :func:`scan_input`), read again from the file."""
    for line, raw in _input_lines(path):
        if line in lines:
            got = parse_line(raw, line, service)
            if isinstance(got, BatchRequest):
                yield got


# --- reading the output (resume) -------------------------------------------------------------

_SUCCESS, _SETTLED_FAILURE, _REDO = 2, 1, 0


def is_retryable_line(obj: dict[str, Any]) -> bool:
    """A recorded failure worth another try: no HTTP answer, or HTTP 429 / 5xx."""
    err = obj.get("error")
    if err is None:
        return False
    if isinstance(err, dict) and err.get("code") in TRANSPORT_CODES:
        return True
    resp = obj.get("response")
    status = resp.get("status_code") if isinstance(resp, dict) else None
    if not isinstance(status, int):
        return True
    return retryable_status(status)


def retryable_status(status: int) -> bool:
    return status == 429 or 500 <= status <= 599


@dataclass
class ResumeState:
    """What an existing OUTPUT already holds."""

    succeeded: set[str] = field(default_factory=set)
    #: failures kept as final (4xx answers), not retried unless ``retry_failed``
    failed: set[str] = field(default_factory=set)
    lines: int = 0
    #: OUTPUT line numbers (0-based) to keep when the file must be rewritten; None: keep all
    keep: list[int] | None = None
    dropped_redo: int = 0
    dropped_duplicates: int = 0
    dropped_truncated: bool = False
    #: (size, mtime) of OUTPUT when read; None: it did not exist
    stamp: tuple[int, int] | None = None


def file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def _output_problem(path: Path, line: int, what: str) -> KitError:
    return KitError(
        f"{path} line {line} {what}, so it is not an output of kit batch",
        hint="choose another -o OUTPUT, or remove the file to start over",
    )


def _rank(obj: dict[str, Any], retry_failed: bool) -> int:
    if obj.get("error") is None and isinstance(obj.get("response"), dict):
        return _SUCCESS
    if retry_failed or is_retryable_line(obj):
        return _REDO
    return _SETTLED_FAILURE


def read_output(path: Path, *, retry_failed: bool = False) -> ResumeState:
    """Classify an existing OUTPUT's lines; decide which to keep. Reads only."""
    state = ResumeState(stamp=file_stamp(path))
    if state.stamp is None:
        return state
    best: dict[str, tuple[int, int]] = {}  # custom_id -> (rank, line index)
    complete = blank = 0
    with path.open("rb") as f:
        for idx, raw in enumerate(f):
            if not raw.endswith(b"\n"):
                state.dropped_truncated = True  # cut off mid-write: redone
                break
            complete += 1
            if not raw.strip():
                blank += 1
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise _output_problem(path, idx + 1, "is not JSON") from None
            cid = obj.get("custom_id") if isinstance(obj, dict) else None
            if not isinstance(cid, str):
                raise _output_problem(path, idx + 1, "has no custom_id")
            rank = _rank(obj, retry_failed)
            if cid not in best or rank > best[cid][0]:
                best[cid] = (rank, idx)
    state.lines = complete
    for cid, (rank, _) in best.items():
        if rank == _SUCCESS:
            state.succeeded.add(cid)
        elif rank == _SETTLED_FAILURE:
            state.failed.add(cid)
        else:
            state.dropped_redo += 1
    keep = sorted(idx for rank, idx in best.values() if rank != _REDO)
    state.dropped_duplicates = complete - blank - len(keep) - state.dropped_redo
    if len(keep) != complete or state.dropped_truncated:
        state.keep = keep
    return state


def rewrite_output(path: Path, keep: list[int]) -> None:
    """Keep only the lines ``keep`` of ``path``: a new file, swapped in atomically."""
    wanted = set(keep)
    tmp = path.with_name(f".{path.name}.tmp")
    with path.open("rb") as src, tmp.open("wb") as dst:
        for idx, raw in enumerate(src):
            if idx in wanted:
                dst.write(raw)
        dst.flush()
        os.fsync(dst.fileno())
    tmp.replace(path)


def write_errors_file(path: Path, invalid: list[InvalidLine]) -> None:
    """Invalid input lines, rewritten on every run (removed when there are none)."""
    if not invalid:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f".{path.name}.tmp")
    text = "".join(json.dumps(i.to_json(), ensure_ascii=False) + "\n" for i in invalid)
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


class OutputWriter:
    """Appends one result line per ``write`` call (O_APPEND, unbuffered): never half a line,
    short of the process being killed mid-call (a truncated last line is redone on resume)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, obj: dict[str, Any]) -> None:
        data = memoryview((json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8"))
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError as exc:
            raise KitError(f"cannot write {self.path}: {exc.strerror}") from None

    def close(self) -> None:
        os.close(self.fd)


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """One ``kit batch`` per OUTPUT at a time (two would write every line twice)."""
    lock = output.with_name(f".{output.name}.lock")
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise KitError(
            f"another kit batch is writing {output}",
            hint="wait for it to finish (or stop it), or choose another -o OUTPUT",
        ) from None
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


# --- the job ----------------------------------------------------------------------------------


@dataclass
class BatchJob:
    """Everything decided before the first request: validated input, resume state, notes."""

    service: ServicePlan
    endpoint: Endpoint
    input: Path
    output: Path
    options: BatchOptions
    scan: InputScan
    resume: ResumeState
    #: input line numbers still to send
    todo: frozenset[int]
    notes: list[str] = field(default_factory=list)

    @property
    def errors_path(self) -> Path:
        return errors_path_for(self.output)


def _model_note(scan: InputScan, served: str) -> str | None:
    parts = []
    if scan.model_omitted:
        parts.append(f"{scan.model_omitted} omitted it")
    if scan.model_other:
        names = ", ".join(repr(n) for n, _ in scan.model_other.most_common(3))
        more = " ..." if len(scan.model_other) > 3 else ""
        parts.append(f"{sum(scan.model_other.values())} named another model ({names}{more})")
    if not parts:
        return None
    return f"body.model set to {served!r} (the service's served name): " + "; ".join(parts)


def _resume_notes(resume: ResumeState, job_output: Path) -> list[str]:
    notes = []
    if resume.lines or resume.dropped_truncated:
        notes.append(
            f"resuming {job_output}: {len(resume.succeeded)} done, {len(resume.failed)} failed "
            "with a 4xx (kept; --retry-failed redoes them)"
        )
    if resume.dropped_redo:
        notes.append(f"{resume.dropped_redo} lines that failed with a retryable error are redone")
    if resume.dropped_truncated:
        notes.append("the last line of the output was cut off (interrupted write): redone")
    if resume.dropped_duplicates:
        notes.append(f"{resume.dropped_duplicates} duplicate lines dropped from the output")
    return notes


def prepare_batch(
    plan: Plan,
    service_name: str,
    input_path: Path,
    output: Path,
    options: BatchOptions | None = None,
) -> BatchJob:
    """Validate the input and read what OUTPUT already holds. Changes no file."""
    options = options or BatchOptions()
    options.check()
    service = plan.service(service_name)
    if service.kind not in URLS_BY_KIND:
        raise KitError(
            f"service '{service.name}' has kind {service.kind!r}; kit batch serves chat, embed and rerank"
        )
    if not input_path.is_file():
        raise KitError(f"input file {input_path} not found")
    if input_path.resolve() == output.resolve():
        raise KitError("-o OUTPUT is the input file; choose another output path")
    if not output.parent.is_dir():
        raise KitError(f"folder {output.parent} of -o OUTPUT does not exist; create it first")
    scan = scan_input(input_path, service)
    if not scan.requests and not scan.invalid:
        raise KitError(f"{input_path} has no requests: expected one JSON request per line")
    resume = read_output(output, retry_failed=options.retry_failed)
    done = resume.succeeded | resume.failed
    todo = frozenset(n for n, cid in scan.requests.items() if cid not in done)
    notes = _resume_notes(resume, output)
    note = _model_note(scan, service.served_name)
    if note:
        notes.append(note)
    endpoint = endpoint_for(plan, service)
    return BatchJob(service, endpoint, input_path, output, options, scan, resume, todo, notes)


# --- progress and summary ---------------------------------------------------------------------


class BatchListener(Protocol):
    def start(self, total: int) -> None: ...
    def advance(self, ok: bool) -> None: ...
    def stop(self) -> None: ...


@dataclass
class Summary:
    requests: int = 0  # valid requests in the input
    done: int = 0  # succeeded in this run
    failed: int = 0  # failed in this run
    failed_before: int = 0  # failed with a 4xx in an earlier run, kept
    skipped: int = 0  # succeeded in an earlier run
    invalid: int = 0
    not_run: int = 0  # left for the next run (interrupted)
    retries: int = 0
    elapsed: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)
    invalid_lines: list[InvalidLine] = field(default_factory=list)
    output: Path | None = None
    errors_path: Path | None = None

    @property
    def ok(self) -> bool:
        return not (self.failed or self.failed_before or self.invalid or self.not_run)

    def record(self, line: dict[str, Any]) -> bool:
        err = line.get("error")
        if err is None:
            self.done += 1
            return True
        self.failed += 1
        self.failures[f"{err['code']}: {err['message'][:160]}"] += 1
        return False


class BatchInterrupted(KitError):
    """Ctrl-C: OUTPUT is valid and the same command resumes."""

    exit_code = 130

    def __init__(self, summary: Summary, command_hint: str = "run the same command again") -> None:
        out = summary.output
        super().__init__(
            f"batch interrupted: {summary.done + summary.failed} results written this run, "
            f"{summary.not_run} left; {out} holds only complete lines",
            hint=f"{command_hint} to resume (done lines are skipped)",
        )
        self.summary = summary


# --- HTTP -------------------------------------------------------------------------------------


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


def error_message(body: Any, text: str) -> str:
    """The message of a vLLM/OpenAI/FastAPI error body (nested, flat, ``detail``)."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        for key in ("message", "detail"):
            if body.get(key):
                return str(body[key])
    return text.strip()[:300] or "(empty body)"


def error_body_code(body: Any) -> int | None:
    """The status inside an error body sent with HTTP 200 (vLLM 0.11 does that for routes a
    runner does not serve, vllm-project/vllm#21704); None for a real answer."""
    if not isinstance(body, dict):
        return None
    err = body.get("error")
    if isinstance(err, dict):
        code = err.get("code")
    elif body.get("object") == "error":
        code = body.get("code")
    else:
        return None
    return code if isinstance(code, int) and 400 <= code <= 599 else 400


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
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    answer = Answer(status, request_id, body, text)
    if retryable_status(status):
        raise Retryable(f"http_{status}", error_message(body, text), answer, retry_after)
    return answer


def line_for(req: BatchRequest, answer: Answer) -> dict[str, Any]:
    """The output line for a final answer."""
    status = answer.status
    code = error_body_code(answer.body) if status == 200 else None
    if 200 <= status < 300 and code is None and answer.body is not None:
        return success_line(req.custom_id, answer.request_id, status, answer.body)
    message = error_message(answer.body, answer.text)
    if code is not None:
        status = code
        message += " (HTTP 200 with an error body)"
    elif 200 <= status < 300:
        message = f"HTTP {status} without a JSON body: {message}"
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


def _backoff(opts: BatchOptions) -> Callable[[RetryCallState], float]:
    expo = wait_exponential(multiplier=opts.backoff_initial, max=opts.backoff_max) + wait_random(
        0, opts.backoff_initial
    )

    def wait(state: RetryCallState) -> float:
        base = expo(state)
        exc = state.outcome.exception() if state.outcome else None
        after = getattr(exc, "retry_after", None)
        return max(base, min(after, opts.backoff_max)) if after else base

    return wait


async def run_request(
    session: aiohttp.ClientSession, req: BatchRequest, opts: BatchOptions, summary: Summary
) -> dict[str, Any]:
    """One request with retries; always returns its output line."""

    def count(_: RetryCallState) -> None:
        summary.retries += 1

    retrying = AsyncRetrying(
        stop=stop_after_attempt(opts.max_retries + 1),
        wait=_backoff(opts),
        retry=retry_if_exception_type(Retryable),
        before_sleep=count,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                answer = await send_once(session, req, opts.timeout)
    except Retryable as exc:
        return exhausted_line(req, exc, retrying.statistics.get("attempt_number", 1))
    return line_for(req, answer)


async def preflight(session: aiohttp.ClientSession, job: BatchJob) -> None:
    """Fail fast with one clear message when the service is not up."""
    where = f"service '{job.service.name}' at {job.endpoint.base_url}"
    hint = "start the stack with `kit up STACK` (it waits until every service is ready)"
    try:
        async with session.get("/health", timeout=aiohttp.ClientTimeout(total=10)) as resp:
            status = resp.status
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise NotReadyError(f"{where} is not reachable ({type(exc).__name__})", hint=hint) from None
    if status != 200:
        raise NotReadyError(f"{where} is not ready: GET /health answered {status}", hint=hint)


# --- running ----------------------------------------------------------------------------------


def _session(job: BatchJob) -> aiohttp.ClientSession:
    headers = {"Accept": "application/json"}
    if job.endpoint.api_key:
        headers["Authorization"] = f"Bearer {job.endpoint.api_key}"
    connector = aiohttp.TCPConnector(limit=job.options.concurrency)
    return aiohttp.ClientSession(
        base_url=job.endpoint.base_url, headers=headers, connector=connector
    )


async def _dispatch(
    session: aiohttp.ClientSession,
    job: BatchJob,
    writer: OutputWriter,
    summary: Summary,
    listener: BatchListener | None,
) -> None:
    sem = asyncio.Semaphore(job.options.concurrency)
    tasks: set[asyncio.Task[None]] = set()

    async def one(req: BatchRequest) -> None:
        try:
            line = await run_request(session, req, job.options, summary)
            writer.write(line)  # synchronous: a cancellation never splits a line
            summary.not_run -= 1
            ok = summary.record(line)
            if listener is not None:
                listener.advance(ok)
        finally:
            sem.release()

    try:
        for req in iter_requests(job.input, job.service, job.todo):
            await sem.acquire()
            task = asyncio.create_task(one(req))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def new_summary(job: BatchJob) -> Summary:
    ids = set(job.scan.requests.values())
    return Summary(
        requests=len(job.scan.requests),
        skipped=len(ids & job.resume.succeeded),
        failed_before=len(ids & job.resume.failed),
        invalid=len(job.scan.invalid),
        not_run=len(job.todo),
        invalid_lines=list(job.scan.invalid),
        output=job.output,
        errors_path=job.errors_path if job.scan.invalid else None,
    )


async def run_batch_async(
    job: BatchJob, listener: BatchListener | None = None, summary: Summary | None = None
) -> Summary:
    """Send what is left, counting into ``summary``. Cancelling it leaves OUTPUT valid."""
    summary = summary or new_summary(job)
    t0 = time.monotonic()
    with output_lock(job.output):
        if file_stamp(job.output) != job.resume.stamp:
            raise KitError(
                f"{job.output} changed after it was read (another kit batch?)",
                hint="run the command again: it reads the file anew",
            )
        if job.resume.keep is not None:
            rewrite_output(job.output, job.resume.keep)
        write_errors_file(job.errors_path, job.scan.invalid)
        if not job.todo:
            job.output.touch()
            return summary
        async with _session(job) as session:
            await preflight(session, job)
            writer = OutputWriter(job.output)
            if listener is not None:
                listener.start(len(job.todo))
            try:
                await _dispatch(session, job, writer, summary, listener)
            finally:
                writer.close()
                summary.elapsed = time.monotonic() - t0
                if listener is not None:
                    listener.stop()
    return summary


def run_batch(job: BatchJob, listener: BatchListener | None = None) -> Summary:
    """Run ``job`` to the end. Ctrl-C raises :class:`BatchInterrupted` (OUTPUT stays valid)."""
    summary = new_summary(job)
    try:
        return asyncio.run(run_batch_async(job, listener, summary))
    except KeyboardInterrupt:
        raise BatchInterrupted(summary) from None
