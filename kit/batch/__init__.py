"""``kit batch``: run an OpenAI-format batch file against one service of a running stack.

The input is what ``vllm run-batch`` and the OpenAI Batch API read: one JSON object per line
with ``custom_id``, ``method``, ``url`` and ``body``. The output has the same shape as their
output files: one line per request with its ``custom_id`` and either the response or the error.

Requests run with bounded concurrency (an :class:`asyncio.Semaphore`) over aiohttp. Connection
errors, timeouts, HTTP 429 and 5xx are retried with exponential backoff (tenacity); other 4xx
answers (and error bodies sent with HTTP 200, as :mod:`kit.wire` tells them) are recorded as
that line's error at once.

Every result is appended to OUTPUT as one complete line with one ``write`` call, so an
interrupted run leaves a valid file. Run the same command again to resume: lines that
succeeded (and lines the server refused with a 4xx, unless ``retry_failed``) are skipped;
lines that failed with a retryable error, and a truncated last line, are dropped and redone.
Each custom_id ends up in OUTPUT exactly once.

Input lines that are not a valid request go to ``OUTPUT.errors.jsonl`` (same line shape, error
code ``invalid_request``, with the line number); that file is rewritten on every run.

The modules: :mod:`~kit.batch.input` (reading and validating lines), :mod:`~kit.batch.results`
(the output line format and error codes), :mod:`~kit.batch.resume` (what OUTPUT holds,
rewriting it, appending, the lock), :mod:`~kit.batch.transport` (sending with retries) and
:mod:`~kit.batch.run` (the job: prepare, dispatch, summary).
"""

from kit.batch.resume import errors_path_for, output_lock, read_output
from kit.batch.run import (
    BatchInterrupted,
    BatchOptions,
    Summary,
    new_summary,
    prepare_batch,
    run_batch,
    run_batch_async,
)

__all__ = [
    "BatchInterrupted",
    "BatchOptions",
    "Summary",
    "errors_path_for",
    "new_summary",
    "output_lock",
    "prepare_batch",
    "read_output",
    "run_batch",
    "run_batch_async",
]
