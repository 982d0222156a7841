"""The batch job: prepare it (validate the input, read what OUTPUT holds, decide what is left),
send what is left with bounded concurrency, count it into a :class:`Summary`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from kit import kinds
from kit.batch.input import BatchRequest, InputScan, InvalidLine, iter_requests, scan_input
from kit.batch.resume import (
    OutputWriter,
    ResumeState,
    errors_path_for,
    file_stamp,
    output_lock,
    read_output,
    rewrite_output,
    write_errors_file,
)
from kit.batch.transport import RetryPolicy, open_session, preflight, run_request
from kit.client import Endpoint, endpoint_for
from kit.errors import KitError
from kit.service_plan import ServicePlan
from kit.stack_plan import Plan


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

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_retries, self.timeout, self.backoff_initial, self.backoff_max)


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
    if not kinds.kind(service.kind).batch_urls:
        served = ", ".join(k.name for k in kinds.KINDS.values() if k.batch_urls)
        raise KitError(
            f"service '{service.name}' has kind {service.kind!r}; kit batch serves {served}"
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

    def count_retry(self) -> None:
        self.retries += 1

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
            line = await run_request(session, req, job.options.policy, summary.count_retry)
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
        async with open_session(job.endpoint, job.options.concurrency) as session:
            await preflight(session, f"service '{job.service.name}' at {job.endpoint.base_url}")
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
