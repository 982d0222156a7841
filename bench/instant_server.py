"""An instant OpenAI-compatible server for measuring load *clients*, not engines.

Every response is prebuilt bytes, so the server costs as little CPU as Python allows and the
client under test is the bottleneck. Chat and completions stream like vLLM (chunked SSE: a
role chunk, one chunk per output token, a usage chunk, ``[DONE]``) or answer in one JSON;
embeddings and rerank answer fixed bodies. Not a vLLM simulation (that is engine_double/).

Run: python bench/instant_server.py --port 19200 --tokens 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from typing import ClassVar

MODEL = "instant"


def _chunked(events: list[bytes]) -> bytes:
    out = []
    for ev in events:
        out.append(b"%x\r\n%s\r\n" % (len(ev), ev))
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def build_responses(tokens: int, model: str) -> dict[str, bytes]:
    head = {
        "id": "chatcmpl-instant",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
    }

    def sse(obj: object) -> bytes:
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    def choice(delta: dict, finish: str | None) -> dict:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    usage = {"prompt_tokens": 8, "total_tokens": 8 + tokens, "completion_tokens": tokens}
    events = [sse({**head, "choices": [choice({"role": "assistant", "content": ""}, None)]})]
    for i in range(tokens):
        finish = "length" if i == tokens - 1 else None
        events.append(sse({**head, "choices": [choice({"content": f" tok{i}"}, finish)]}))
    events.append(sse({**head, "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    stream = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
        b"transfer-encoding: chunked\r\n\r\n" + _chunked(events)
    )
    comp_events = [
        sse({"id": "cmpl-instant", "object": "text_completion", "created": 0, "model": model,
             "choices": [{"index": 0, "text": f" tok{i}", "logprobs": None,
                          "finish_reason": "length" if i == tokens - 1 else None}]})
        for i in range(tokens)
    ]  # fmt: skip
    comp_events.append(sse({"id": "cmpl-instant", "object": "text_completion", "created": 0,
                            "model": model, "choices": [], "usage": usage}))  # fmt: skip
    comp_events.append(b"data: [DONE]\n\n")
    comp_stream = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
        b"transfer-encoding: chunked\r\n\r\n" + _chunked(comp_events)
    )

    def plain(obj: object) -> bytes:
        body = json.dumps(obj, separators=(",", ":")).encode()
        return (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            % len(body)
        ) + body

    text = "".join(f" tok{i}" for i in range(tokens))
    chat = plain({"id": "chatcmpl-instant", "object": "chat.completion", "created": 0,
                  "model": model, "choices": [{"index": 0, "message": {"role": "assistant",
                  "content": text}, "finish_reason": "length"}], "usage": usage})  # fmt: skip
    emb = plain({"object": "list", "model": model,
                 "data": [{"index": 0, "object": "embedding", "embedding": [0.1] * 384}],
                 "usage": {"prompt_tokens": 8, "total_tokens": 8}})  # fmt: skip
    rerank = plain({"id": "rerank-instant", "model": model, "usage": {"total_tokens": 40},
                    "results": [{"index": i, "document": {"text": f"d{i}"},
                                 "relevance_score": 1.0 - i / 10} for i in range(4)]})  # fmt: skip
    models = plain({"object": "list", "data": [{"id": model, "object": "model", "root": model}]})
    health = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    not_found = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
    return {
        "chat_stream": stream, "chat": chat, "comp_stream": comp_stream, "comp": chat,
        "emb": emb, "rerank": rerank, "models": models, "health": health, "404": not_found,
    }  # fmt: skip


class Instant(asyncio.Protocol):
    responses: ClassVar[dict[str, bytes]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = 0
            i = head.lower().find(b"content-length:")
            if i >= 0:
                length = int(
                    head[i + 15 : head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]
                )
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self.t.write(self._answer(head, body))  # type: ignore[attr-defined]

    def _answer(self, head: bytes, body: bytes) -> bytes:
        path = head.split(b" ", 2)[1]
        r = self.responses
        stream = b'"stream":true' in body or b'"stream": true' in body
        if path == b"/v1/chat/completions":
            return r["chat_stream"] if stream else r["chat"]
        if path == b"/v1/completions":
            return r["comp_stream"] if stream else r["comp"]
        if path == b"/v1/embeddings":
            return r["emb"]
        if path in (b"/v1/rerank", b"/rerank", b"/v2/rerank"):
            return r["rerank"]
        if path == b"/v1/models":
            return r["models"]
        if path == b"/health":
            return r["health"]
        return r["404"]


async def serve(port: int, tokens: int, model: str) -> None:
    Instant.responses = build_responses(tokens, model)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Instant, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"instant server on 127.0.0.1:{port} ({tokens} tokens, pid {os.getpid()})", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description="instant OpenAI-compatible server (bench only)")
    ap.add_argument("--port", type=int, default=19200)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--model", default=MODEL)
    a = ap.parse_args()
    asyncio.run(serve(a.port, a.tokens, a.model))


if __name__ == "__main__":
    main()
