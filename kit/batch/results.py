"""Result lines: the output format ``vllm run-batch`` writes, its error codes, and which
recorded failures are worth another try.

One line per request: ``{"id", "custom_id", "response": {"status_code", "request_id", "body"},
"error": {"code", "message"}}``, with ``error`` None on success.
"""

from __future__ import annotations

import uuid
from typing import Any

INVALID = "invalid_request"
CONNECTION_ERROR = "connection_error"
TIMEOUT = "timeout"
#: Error codes recorded without an HTTP response: always retried on resume.
TRANSPORT_CODES = (CONNECTION_ERROR, TIMEOUT)


def new_id() -> str:
    return f"batch_req_{uuid.uuid4().hex}"


def success_line(custom_id: str, request_id: str, status: int, body: Any) -> dict[str, Any]:
    response = {"status_code": status, "request_id": request_id, "body": body}
    return {"id": new_id(), "custom_id": custom_id, "response": response, "error": None}


def error_line(
    custom_id: str | None, code: str, message: str, response: dict[str, Any] | None = None
) -> dict[str, Any]:
    err = {"code": code, "message": message}
    return {"id": new_id(), "custom_id": custom_id, "response": response, "error": err}


def retryable_status(status: int) -> bool:
    return status == 429 or 500 <= status <= 599


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
