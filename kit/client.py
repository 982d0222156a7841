"""A small HTTP client for one vLLM endpoint (stdlib only): readiness probes and smoke tests.

Load tests use their own asynchronous client; this one favours clear errors over speed.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit import wire
from kit.service_plan import ServicePlan
from kit.stack_plan import Plan


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def text(self, limit: int = 300) -> str:
        return self.body.decode("utf-8", "replace")[:limit]

    def error(self) -> wire.WireError | None:
        """This answer as an error (an HTTP error status, or an error body sent with 200)."""
        return wire.raw_error(self.status, self.body)


class PortClosed(Exception):
    """Nothing listens on the port yet (vLLM keeps it closed while loading)."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    api_key: str | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _conn(self, timeout: float) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(
        self, method: str, path: str, body: Any | None = None, *, timeout: float = 30.0
    ) -> Response:
        data = None if body is None else json.dumps(body).encode()
        conn = self._conn(timeout)
        t0 = time.perf_counter()
        try:
            headers = wire.json_headers(self.api_key, body=data is not None)
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        except ConnectionRefusedError:
            raise PortClosed(f"{self.base_url}: connection refused") from None
        except (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError) as exc:
            # a port published by Docker accepts, then resets, while nothing listens inside
            raise PortClosed(f"{self.base_url}: {type(exc).__name__}") from None
        finally:
            conn.close()
        return Response(resp.status, payload, time.perf_counter() - t0)

    def get(self, path: str, *, timeout: float = 30.0) -> Response:
        return self.request("GET", path, timeout=timeout)

    def served_models(self, *, timeout: float) -> tuple[int, list[str]]:
        """``GET /v1/models``: its status and the ids it lists (none unless a 200 list).
        Raises :class:`PortClosed` or ``OSError`` like :meth:`get`."""
        r = self.get(wire.MODELS, timeout=timeout)
        if r.status != 200:
            return r.status, []
        try:
            data = r.json().get("data", [])
            return r.status, [m.get("id") for m in data if isinstance(m, dict)]
        except (ValueError, AttributeError):
            return r.status, []

    def post(self, path: str, body: Any, *, timeout: float = 120.0) -> Response:
        return self.request("POST", path, body, timeout=timeout)

    def stream(
        self, path: str, body: Any, *, timeout: float = 120.0
    ) -> Iterator[tuple[float, str]]:
        """POST and yield ``(seconds since send, data)`` for each SSE event's ``data``."""
        conn = self._conn(timeout)
        t0 = time.perf_counter()
        try:
            headers = wire.json_headers(self.api_key)
            conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
            resp = conn.getresponse()
            lines: Iterable[bytes] = resp
            if resp.status != 200 or "json" in (resp.getheader("Content-Type") or ""):
                # an error instead of a stream (vLLM 0.11 sends some with HTTP 200)
                raw = resp.read()
                error = wire.raw_error(resp.status, raw)
                if error is not None:
                    raise StreamError(error)
                lines = (raw,)
            sse = wire.SSESplitter()
            for line in lines:
                for data in sse.feed(line):
                    yield time.perf_counter() - t0, data.decode("utf-8", "replace").strip()
            for data in sse.close():
                yield time.perf_counter() - t0, data.decode("utf-8", "replace").strip()
        except ConnectionRefusedError:
            raise PortClosed(f"{self.base_url}: connection refused") from None
        finally:
            conn.close()


class StreamError(Exception):
    """A stream request answered with an error instead of a stream."""

    def __init__(self, error: wire.WireError) -> None:
        super().__init__(str(error))
        self.error = error
        self.status = error.code


def read_api_key(path: Path | None) -> str | None:
    """VLLM_API_KEY from an env file. The value is returned, never printed or logged."""
    if path is None or not path.is_file():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.strip().removeprefix("export ").strip() == "VLLM_API_KEY":
            return value.strip().strip("'\"") or None
    return None


def endpoint_for(plan: Plan, service: ServicePlan) -> Endpoint:
    bind = plan.stack.defaults.bind_address
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind, bind)
    if service.api_address:  # a stack over several hosts: where its host is reached (kit.hosts)
        host = service.api_address
    return Endpoint(host, service.port, read_api_key(plan.stack.api_key_file()))


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
