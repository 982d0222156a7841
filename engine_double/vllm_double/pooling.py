"""Pooling routes: /v1/embeddings (embed runner), rerank and score (embed or classify runner),
each taking the request's JSON body."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import TYPE_CHECKING

from .http_server import Response, json_response
from .outputs import body_usage, embedding_json, relevance, words_of

if TYPE_CHECKING:
    from .config import Config
    from .errors import Errors
    from .metrics import Metrics


def doc_text(doc) -> str | None:
    if isinstance(doc, str):
        return doc
    if isinstance(doc, dict) and isinstance(doc.get("text"), str):
        return doc["text"]
    return None


class Pooling:
    def __init__(self, cfg: Config, errors: Errors, metrics: Metrics) -> None:
        self.cfg = cfg
        self.errors = errors
        self.metrics = metrics

    async def embeddings(self, body: dict, writer: asyncio.StreamWriter) -> Response:
        c = self.cfg
        if "input" not in body:
            return self.errors.missing_field("input", body)
        raw = body.get("input")
        if isinstance(raw, str):
            texts, counts = [raw], [len(words_of(raw))]
        elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
            texts, counts = list(raw), [len(words_of(x)) for x in raw]
        elif (
            isinstance(raw, list)
            and raw
            and all(isinstance(x, int) and not isinstance(x, bool) for x in raw)
        ):
            texts, counts = [json.dumps(raw)], [len(raw)]
        elif isinstance(raw, list) and raw and all(isinstance(x, list) for x in raw):
            texts, counts = [json.dumps(x) for x in raw], [len(x) for x in raw]
        else:
            return self.errors.error(
                "Input must be a string, a list of strings or a list of token ids, and must not be empty."
            )
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            return self.errors.invalid(
                "literal_error", ("encoding_format",), "Input should be 'float' or 'base64'", fmt
            )
        too_long = [n for n in counts if n > c.max_model_len]
        if too_long:
            return self.errors.error(
                f"This model's maximum context length is {c.max_model_len} tokens. However, you requested "
                f"{too_long[0]} tokens in the input for embedding generation. Please reduce the length of the input."
            )
        dim = c.embed_dim
        parts = [
            f'{{"index":{i},"object":"embedding","embedding":{embedding_json(t, dim, fmt)}}}'
            for i, t in enumerate(texts)
        ]
        tokens = sum(counts)
        self.metrics.finish(tokens, 0, ("stop",), len(texts))
        usage = (
            f'{{"prompt_tokens":{tokens},"total_tokens":{tokens},'
            f'"completion_tokens":0,"prompt_tokens_details":null}}'
        )
        payload = (
            f'{{"id":"embd-{uuid.uuid4().hex}","object":"list","created":{int(time.time())},'
            f'"model":{json.dumps(c.served_names[0])},"data":[{",".join(parts)}],"usage":{usage}}}'
        )
        return Response(200, payload.encode())

    async def rerank(self, body: dict, writer: asyncio.StreamWriter) -> Response:
        query = body.get("query")
        if not isinstance(query, str):
            return self.errors.missing_field("query", body)
        docs_raw = body.get("documents")
        if not isinstance(docs_raw, list):
            return self.errors.missing_field("documents", body)
        docs = [doc_text(d) for d in docs_raw]
        if any(d is None for d in docs):
            return self.errors.error(
                "documents must be a list of strings or of {'text': ...} objects."
            )
        top_n = body.get("top_n") or 0
        if not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 0:
            return self.errors.error(f"top_n must be a non-negative integer, got {top_n!r}.")
        q_tokens = len(words_of(query))
        total = 0
        results = []
        for i, d in enumerate(docs):
            assert d is not None
            total += q_tokens + len(words_of(d))
            results.append(
                {"index": i, "document": {"text": d}, "relevance_score": relevance(query, d)}
            )
        results.sort(key=lambda r: (-r["relevance_score"], r["index"]))
        if top_n:
            results = results[:top_n]
        self.metrics.finish(total, 0, ("stop",), len(docs))
        return json_response(
            {
                "id": f"rerank-{uuid.uuid4().hex}",
                "model": self.cfg.served_names[0],
                "usage": {"total_tokens": total},
                "results": results,
            }
        )

    async def score(self, body: dict, writer: asyncio.StreamWriter) -> Response:
        t1 = body.get("text_1", body.get("data_1", body.get("queries")))
        t2 = body.get("text_2", body.get("data_2", body.get("documents", body.get("items"))))
        if t1 is None:
            return self.errors.missing_field("text_1", body)
        if t2 is None:
            return self.errors.missing_field("text_2", body)
        l1 = [t1] if isinstance(t1, str) else t1
        l2 = [t2] if isinstance(t2, str) else t2
        not_texts = "text_1 and text_2 must be strings or non-empty lists of strings."
        if not (isinstance(l1, list) and isinstance(l2, list)) or not l1 or not l2:
            return self.errors.error(not_texts)
        if not all(isinstance(x, str) for x in l1 + l2):
            return self.errors.error(not_texts)
        if len(l1) == 1:
            l1 = l1 * len(l2)
        elif len(l1) != len(l2):
            return self.errors.error(
                "text_1 and text_2 must have the same length (or text_1 a single text)."
            )
        data = []
        total = 0
        for i, (a, b) in enumerate(zip(l1, l2, strict=True)):
            total += len(words_of(a)) + len(words_of(b))
            data.append({"index": i, "object": "score", "score": relevance(a, b)})
        self.metrics.finish(total, 0, ("stop",), len(data))
        return json_response(
            {
                "id": f"score-{uuid.uuid4().hex}",
                "object": "list",
                "created": int(time.time()),
                "model": self.cfg.served_names[0],
                "data": data,
                "usage": body_usage(total, 0),
            }
        )
