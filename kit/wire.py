"""The OpenAI-compatible wire format as vLLM speaks it, in one place.

Every HTTP client of the kit (:mod:`kit.client` for probes and smoke tests, :mod:`kit.loadgen`
for ``kit bench``, :mod:`kit.batch` for ``kit batch``) takes from here the endpoint paths, the
auth header, how to tell an error answer from a real one (including the error bodies vLLM sends
with HTTP 200), which fields carry reasoning text, and how a Server-Sent-Events stream splits
into ``data:`` payloads.

Stdlib only and cheap to import: no aiohttp, no rich. The byte-level helpers (:class:`SSESplitter`,
:func:`carries_output`, :func:`int_field`, :func:`raw_error`) are on ``kit bench``'s hot path and
touch bytes without parsing JSON, yet accept JSON formatted any valid way (spaces around ``:``,
pretty-printed events spread over several ``data:`` lines).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from kit import vllm_versions as vv

# --- paths ----------------------------------------------------------------------------------

HEALTH = "/health"
MODELS = "/v1/models"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
RERANK = "/v1/rerank"
SCORE = "/v1/score"
#: vLLM's runtime LoRA loading (needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=True in the server);
#: body {"lora_name": ..., "lora_path": ...}
LOAD_LORA = "/v1/load_lora_adapter"
UNLOAD_LORA = "/v1/unload_lora_adapter"

#: ``kit bench --api`` value -> the path it posts to
API_PATHS: dict[str, str] = {
    "chat": CHAT,
    "completions": COMPLETIONS,
    "embeddings": EMBEDDINGS,
    "rerank": RERANK,
}
#: APIs that generate text (and can stream it)
GENERATION_APIS = ("chat", "completions")

# --- headers --------------------------------------------------------------------------------


def auth_header(api_key: str | None) -> dict[str, str]:
    """The header vLLM's ``--api-key`` (``VLLM_API_KEY``) wants; empty without a key."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def json_headers(api_key: str | None, *, body: bool = True) -> dict[str, str]:
    """Headers for a JSON request (``body``: one is sent), with the auth header."""
    h = {"Accept": "application/json"}
    if body:
        h["Content-Type"] = "application/json"
    return h | auth_header(api_key)


# --- errors ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WireError:
    """An answer that is an error: its code, its message, and how it came."""

    #: the HTTP status; for an error body sent with a 2xx, the code inside the body
    code: int
    message: str
    #: the status line's code (differs from ``code`` for an error body sent with a 2xx)
    http_status: int

    @property
    def in_body(self) -> bool:
        """A 2xx answer whose body is an error (vLLM 0.11 does that, vllm-project/vllm#21704)."""
        return 200 <= self.http_status < 300

    def __str__(self) -> str:
        if self.in_body:
            return f"HTTP {self.http_status} with an error body (code {self.code}): {self.message}"
        return f"HTTP {self.code}: {self.message}"


def error_message(body: Any, text: str = "") -> str:
    """The message of a vLLM/OpenAI/FastAPI error body (nested, flat, ``detail``), else the
    start of the text."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str) and err:
            return err
        for key in ("message", "detail"):
            if body.get(key):
                return str(body[key])
    return text.strip()[:300] or "(empty body)"


def body_error_code(body: Any) -> int | None:
    """The code of an error body (``{"object": "error", "code": 400, ...}`` or ``{"error":
    {...}}``): the code inside it when it is an HTTP error code, else 400; None when ``body``
    is not an error body."""
    if not isinstance(body, dict):
        return None
    err = body.get("error")
    if isinstance(err, dict | str) and err:
        code = err.get("code") if isinstance(err, dict) else None
    elif body.get("object") == "error":
        code = body.get("code")
    else:
        return None
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    return code if isinstance(code, int) and 400 <= code <= 599 else 400


def classify(status: int, body: Any, text: str = "") -> WireError | None:
    """Whether an answer is an error, with its code and message; None for a real answer.

    ``body`` is the parsed JSON (None if the body is not JSON), ``text`` the body as text. Any
    status outside 2xx is an error; a 2xx is one when its body is an error body.
    """
    if 200 <= status < 300:
        code = body_error_code(body)
        if code is None:
            return None
        return WireError(code, error_message(body, text), status)
    return WireError(status, error_message(body, text), status)


def parse_json(raw: bytes) -> Any:
    """The JSON in ``raw``, or None when it is empty or not JSON."""
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:  # includes UnicodeDecodeError
        return None


def raw_error(status: int, raw: bytes) -> WireError | None:
    """:func:`classify` for a body still in bytes. A 2xx answer is parsed only when it holds
    the token ``"error"`` (every error body does), so real answers cost one byte search."""
    if 200 <= status < 300 and b'"error"' not in raw:
        return None
    return classify(status, parse_json(raw), raw.decode("utf-8", "replace"))


# --- reasoning ------------------------------------------------------------------------------


def reasoning_fields(version: str | vv.Version | None = None) -> tuple[str, ...]:
    """The message/delta fields that carry reasoning text in vLLM ``version``, newest name
    first; every name any version uses when ``version`` is None."""
    if version is None:
        names: list[str] = []
        for rule in reversed(vv.REASONING_FIELD):
            names += [n for n in rule.value if n not in names]
        return tuple(names)
    v = version if isinstance(version, vv.Version) else vv.Version.parse(version)
    return vv.reasoning_fields(v)


#: fields of a chat delta or completions choice whose non-empty string is generated output
OUTPUT_FIELDS: tuple[str, ...] = ("content", *reasoning_fields(), "text")

# --- byte-level field search (hot path) -----------------------------------------------------


def _field(names: tuple[str, ...], value: bytes) -> re.Pattern[bytes]:
    """A JSON member ``"name": value`` for any of ``names``, with any JSON whitespace."""
    keys = b"|".join(re.escape(n.encode()) for n in names)
    return re.compile(rb'"(?:' + keys + rb')"[ \t\r\n]*:[ \t\r\n]*' + value)


#: a non-empty string value of an output field; a ``usage`` object (hot path: use ``.search``)
OUTPUT_RE = _field(OUTPUT_FIELDS, rb'"(?!")')
USAGE_RE = _field(("usage",), rb"\{")
_INTS: dict[str, re.Pattern[bytes]] = {}


def carries_output(payload: bytes) -> bool:
    """An event (chat delta, reasoning or completions text) with generated output: a
    non-empty string in one of :data:`OUTPUT_FIELDS`."""
    return OUTPUT_RE.search(payload) is not None


def has_usage(payload: bytes) -> bool:
    """The payload holds a ``usage`` object (the usage chunk of a stream, or a plain answer)."""
    return USAGE_RE.search(payload) is not None


def int_field(blob: bytes, key: str) -> int | None:
    """The first integer value of ``"key"`` in ``blob`` (e.g. ``completion_tokens``)."""
    pat = _INTS.get(key)
    if pat is None:
        pat = _INTS[key] = _field((key,), rb"(\d+)")
    m = pat.search(blob)
    return int(m[1]) if m else None


# --- Server-Sent Events ---------------------------------------------------------------------

#: the payload that ends an OpenAI stream
DONE = b"[DONE]"


class SSESplitter:
    """Splits a byte stream into the ``data`` of its Server-Sent Events, incrementally.

    Feed it the bytes as they arrive, cut anywhere; it returns the payload of each event that
    the bytes complete. Lines end with ``\\n``, ``\\r\\n`` or ``\\r``; ``data:`` takes an
    optional space; comment lines (``:``) and other fields (``event``, ``id``, ``retry``) are
    skipped; an event of several ``data:`` lines is their values joined by ``\\n``; a blank
    line ends an event. An event without ``data`` yields nothing.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        n = len(data) - 2
        if (  # one whole one-line event, nothing held: what a server flushing per event sends
            not self._buf
            and data.find(b"\n") == n
            and data.startswith(b"data: ")
            and data.endswith(b"\n\n")
            and b"\r" not in data
        ):
            return [data[6:n]]
        if self._buf:
            data, self._buf = self._buf + data, b""
        if b"\r" in data:
            if data.endswith(b"\r"):  # maybe half of a \r\n: wait for the next byte
                data, self._buf = data[:-1], b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if not data.endswith(b"\n\n"):
            cut = data.rfind(b"\n\n") + 2
            if cut < 2:
                self._buf = data + self._buf
                return []
            data, self._buf = data[:cut], data[cut:] + self._buf
        events = data.split(b"\n\n")
        events.pop()  # what follows the last blank line: nothing
        if data.count(b"\n") == 2 * len(events):  # one line each: the usual stream
            out = [ev[6:] for ev in events if ev.startswith(b"data: ")]
            if len(out) == len(events):
                return out
        out = []
        for ev in events:
            payload = _event_data(ev)
            if payload is not None:
                out.append(payload)
        return out

    def close(self) -> list[bytes]:
        """The end of the stream: an event whose lines are complete but whose blank line never
        came is delivered; a line cut off without its line end is dropped."""
        data, self._buf = self._buf.replace(b"\r", b"\n"), b""
        end = data.rfind(b"\n")
        payload = _event_data(data[:end]) if end >= 0 else None
        return [] if payload is None else [payload]

    @property
    def pending(self) -> int:
        """Bytes held back, waiting for the rest of their event."""
        return len(self._buf)


def _event_data(event: bytes) -> bytes | None:
    """The ``data`` of one event's lines (blank ones, only ever leading, are skipped); None
    when it has none."""
    values: list[bytes] = []
    for line in event.split(b"\n"):
        if line[:5] == b"data:":
            value = line[5:]
            values.append(value[1:] if value[:1] == b" " else value)
        elif line == b"data":
            values.append(b"")
    return b"\n".join(values) if values else None


def sse_error(payload: bytes) -> WireError | None:
    """An error event inside a stream (vLLM sends ``data: {"error": {...}}`` when generation
    fails after the 200 went out); None for any other event. Parses JSON only when the
    payload holds the token ``"error"``."""
    if b'"error"' not in payload:
        return None
    return classify(200, parse_json(payload), payload.decode("utf-8", "replace"))
