"""HTTP/1.1 on asyncio streams, answering like uvicorn: requests (plain or chunked bodies,
keep-alive, `Expect: 100-continue`), responses, server-sent events, and the connection loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

_date_cache = [0, b""]


def http_date() -> bytes:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True).encode()
    return _date_cache[1]


class Response:
    __slots__ = ("body", "content_type", "status")

    def __init__(self, status: int, body: bytes = b"", content_type: bytes = b"application/json"):
        self.status = status
        self.body = body
        self.content_type = content_type


def json_response(obj: object, status: int = 200) -> Response:
    return Response(status, json.dumps(obj, separators=(",", ":")).encode())


class Request:
    __slots__ = ("body", "headers", "method", "path", "peer", "target")

    def __init__(self, method, target, headers, body, peer):
        self.method = method
        self.target = target
        self.path = target.split("?", 1)[0]
        self.headers = headers
        self.body = body
        self.peer = peer


class StreamedResponse(Exception):
    """Raised internally when a handler already wrote its (streamed) response."""


class ClientGone(Exception):
    pass


# a route handler: the request and the connection's writer (for streaming) -> the response
Dispatch = Callable[[Request, asyncio.StreamWriter], Awaitable[Response]]


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            # trailers until empty line
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def write_response(writer: asyncio.StreamWriter, resp: Response, keep_alive: bool) -> None:
    head = (
        b"HTTP/1.1 %d %s\r\ndate: %s\r\nserver: uvicorn\r\ncontent-length: %d\r\ncontent-type: %s\r\n%s\r\n"
        % (
            resp.status,
            REASONS.get(resp.status, "OK").encode(),
            http_date(),
            len(resp.body),
            resp.content_type,
            b"" if keep_alive else b"connection: close\r\n",
        )
    )
    writer.write(head + resp.body)
    await writer.drain()


# ---------------------------------------------------------------------------------------------
# server-sent events: a chunked text/event-stream response
# ---------------------------------------------------------------------------------------------


async def start_stream(writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\ndate: %s\r\nserver: uvicorn\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
        b"transfer-encoding: chunked\r\n\r\n" % http_date()
    )


def sse(obj: object) -> bytes:
    data = b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


SSE_DONE = b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"


async def emit(writer: asyncio.StreamWriter, chunks: list[bytes], delay: float) -> None:
    """Write SSE chunks; with a token delay, one by one."""
    try:
        if delay <= 0:
            writer.write(b"".join(chunks))
            await writer.drain()
            return
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(delay)
    except (ConnectionError, OSError) as exc:
        raise ClientGone() from exc


# ---------------------------------------------------------------------------------------------
# connections
# ---------------------------------------------------------------------------------------------


class Connections:
    """Serves `dispatch` on every connection of a listening socket, request after request; with
    `access_log`, calls it once a request is answered. `close_all` drops every connection."""

    def __init__(
        self, dispatch: Dispatch, access_log: Callable[[Request, int], None] | None
    ) -> None:
        self.dispatch = dispatch
        self.access_log = access_log
        self.writers: set[asyncio.StreamWriter] = set()

    async def listen(self, sock: socket.socket) -> asyncio.base_events.Server:
        sock.listen(4096)
        return await asyncio.start_server(self.handle, sock=sock, limit=1 << 20)

    def close_all(self) -> None:
        for w in list(self.writers):
            with contextlib.suppress(Exception):
                w.close()
        self.writers.clear()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # like uvicorn: without it, Nagle holds each streamed token until the client's
            # delayed ACK (up to 40 ms), and tokens arrive in bursts on reused connections
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = writer.get_extra_info("peername")
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                except asyncio.LimitOverrunError:
                    await write_response(
                        writer,
                        Response(431, b'{"detail":"Request Header Fields Too Large"}'),
                        False,
                    )
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, proto = lines[0].split(" ", 2)
                except ValueError:
                    await write_response(
                        writer, Response(400, b'{"detail":"Invalid HTTP request"}'), False
                    )
                    return
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        k, _, val = line.partition(":")
                        headers[k.strip().lower()] = val.strip()
                conn_hdr = headers.get("connection", "").lower()
                keep_alive = (
                    "close" not in conn_hdr if proto == "HTTP/1.1" else "keep-alive" in conn_hdr
                )
                if headers.get("expect", "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    body = await read_chunked(reader)
                else:
                    length = int(headers.get("content-length", "0") or 0)
                    body = await reader.readexactly(length) if length > 0 else b""
                req = Request(method.upper(), target, headers, body, peer)
                try:
                    resp = await self.dispatch(req, writer)
                except StreamedResponse:
                    if self.access_log:
                        self.access_log(req, 200)
                    if not keep_alive:
                        return
                    continue
                except ClientGone:
                    return
                await write_response(writer, resp, keep_alive)
                if self.access_log:
                    self.access_log(req, resp.status)
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, OSError):
            return
        except asyncio.CancelledError:
            return
        finally:
            self.writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
