"""Generation routes: /v1/chat/completions and /v1/completions, plain JSON or streamed as
server-sent events, with vLLM's field order, usage and length checks."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

from .http_server import (
    SSE_DONE,
    Response,
    StreamedResponse,
    emit,
    json_response,
    sse,
    start_stream,
)
from .outputs import (
    REASONING_VOCAB,
    body_usage,
    content_text,
    gen_words,
    generate,
    spaced,
    usage_of,
    words_of,
)

if TYPE_CHECKING:
    from .config import Config
    from .errors import Errors
    from .metrics import Metrics


class GenerationAPI:
    """How one OpenAI generation API spells its answers (one instance per server). A choice is a
    tuple of word lists, then its finish reason; Generation.answer sends them."""

    id_prefix = ""
    object_name = ""
    chunk_object_name = ""
    trailing_nulls: ClassVar[dict[str, None]] = {}  # the body's last fields, all null

    def stream_choices(
        self, choices: list[tuple], prompt_tokens: int, continuous: bool
    ) -> Iterator[tuple[dict, dict | None]]:
        """The `choices` entry of each streamed chunk, with that chunk's usage (or None)."""
        raise NotImplementedError

    def body_choices(self, choices: list[tuple]) -> list[dict]:
        raise NotImplementedError


class ChatAPI(GenerationAPI):
    """/v1/chat/completions: choices are (reasoning words, content words, finish reason)."""

    id_prefix = "chatcmpl-"
    object_name = "chat.completion"
    chunk_object_name = "chat.completion.chunk"
    trailing_nulls: ClassVar[dict[str, None]] = dict.fromkeys(
        ("prompt_logprobs", "prompt_token_ids", "kv_transfer_params")
    )

    def __init__(self, reasoning_key: str) -> None:
        self.reasoning_key = reasoning_key

    def stream_choices(
        self, choices: list[tuple], prompt_tokens: int, continuous: bool
    ) -> Iterator[tuple[dict, dict | None]]:
        rkey = self.reasoning_key
        for i, (rw, cw, fr) in enumerate(choices):
            # the role delta, then one delta a word; without words, an empty delta ends the choice
            deltas = [{"role": "assistant", "content": ""}]
            deltas += [{rkey: text} for text in spaced(rw)]
            deltas += [{"content": text} for text in spaced(cw)]
            if len(deltas) == 1:
                deltas.append({})
            last = len(deltas) - 1
            words = len(rw) + len(cw)
            for k, delta in enumerate(deltas):
                choice = {
                    "index": i,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": fr if k == last else None,
                }
                yield choice, usage_of(prompt_tokens, min(k, words)) if continuous else None

    def body_choices(self, choices: list[tuple]) -> list[dict]:
        rkey = self.reasoning_key
        return [
            {
                "index": i,
                "message": {
                    "role": "assistant",
                    "content": " ".join(cw) if (cw or not rw) else None,
                    "refusal": None,
                    "annotations": None,
                    "audio": None,
                    "function_call": None,
                    "tool_calls": [],
                    rkey: " ".join(rw) if rw else None,
                },
                "logprobs": None,
                "finish_reason": fr,
                "stop_reason": None,
                "token_ids": None,
            }
            for i, (rw, cw, fr) in enumerate(choices)
        ]


class TextAPI(GenerationAPI):
    """/v1/completions: choices are (words, finish reason); no usage in the streamed chunks."""

    id_prefix = "cmpl-"
    object_name = chunk_object_name = "text_completion"
    trailing_nulls: ClassVar[dict[str, None]] = {"kv_transfer_params": None}

    def stream_choices(
        self, choices: list[tuple], prompt_tokens: int, continuous: bool
    ) -> Iterator[tuple[dict, dict | None]]:
        for i, (words, fr) in enumerate(choices):
            pieces = spaced(words) or [""]
            last = len(pieces) - 1
            for k, text in enumerate(pieces):
                choice = {
                    "index": i,
                    "text": text,
                    "logprobs": None,
                    "finish_reason": fr if k == last else None,
                    "stop_reason": None,
                }
                yield choice, None

    def body_choices(self, choices: list[tuple]) -> list[dict]:
        return [
            {
                "index": i,
                "text": " ".join(words),
                "logprobs": None,
                "finish_reason": fr,
                "stop_reason": None,
                "prompt_logprobs": None,
            }
            for i, (words, fr) in enumerate(choices)
        ]


class Generation:
    """The generation routes of one server; each takes the request's JSON body."""

    def __init__(self, cfg: Config, errors: Errors, metrics: Metrics, token_delay: float) -> None:
        self.cfg = cfg
        self.errors = errors
        self.metrics = metrics
        self.token_delay = token_delay
        self.chat_api = ChatAPI(cfg.reasoning_key)
        self.text_api = TextAPI()

    def max_tokens_of(self, body: dict, prompt_tokens: int) -> tuple[int | None, Response | None]:
        c = self.cfg
        raw = body.get("max_completion_tokens")
        if raw is None:
            raw = body.get("max_tokens")
        if raw is None:
            raw = 16
        if isinstance(raw, bool) or not isinstance(raw, int):
            return None, self.errors.invalid(
                "int_type", ("max_tokens",), "Input should be a valid integer", raw
            )
        if raw < 1:
            return None, self.errors.error(f"max_tokens must be at least 1, got {raw}.")
        if prompt_tokens >= c.max_model_len:
            return None, self.errors.error(
                f"This model's maximum context length is {c.max_model_len} tokens. However, your request has "
                f"{prompt_tokens} input tokens. Please reduce the length of the input messages."
            )
        if raw + prompt_tokens > c.max_model_len:
            return None, self.errors.error(
                f"'max_tokens' or 'max_completion_tokens' is too large: {raw}. This model's maximum context "
                f"length is {c.max_model_len} tokens and your request has {prompt_tokens} input tokens "
                f"({raw} > {c.max_model_len} - {prompt_tokens})."
            )
        return raw, None

    async def answer(
        self,
        writer: asyncio.StreamWriter,
        body: dict,
        api: GenerationAPI,
        choices: list[tuple],
        prompt_tokens: int,
        completion_tokens: int,
        max_tokens: int,
    ) -> Response:
        """Send `choices` as SSE chunks (`stream`) or as one JSON body; count them once sent."""
        rid = api.id_prefix + uuid.uuid4().hex
        created = int(time.time())
        model = self.cfg.served_names[0]
        reasons = [choice[-1] for choice in choices]
        self.metrics.running += 1
        try:
            if body.get("stream"):
                head = {
                    "id": rid,
                    "object": api.chunk_object_name,
                    "created": created,
                    "model": model,
                }
                opts = body.get("stream_options") or {}
                include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
                continuous = include_usage and bool(opts.get("continuous_usage_stats"))
                await start_stream(writer)
                chunks: list[bytes] = []
                for choice, chunk_usage in api.stream_choices(choices, prompt_tokens, continuous):
                    chunk = dict(head, choices=[choice])
                    if chunk_usage is not None:
                        chunk["usage"] = chunk_usage
                    chunks.append(sse(chunk))
                if include_usage:
                    usage = usage_of(prompt_tokens, completion_tokens)
                    chunks.append(sse(dict(head, choices=[], usage=usage)))
                chunks.append(SSE_DONE)
                await emit(writer, chunks, self.token_delay)
                self.metrics.finish(prompt_tokens, completion_tokens, reasons)
                raise StreamedResponse()
            if self.token_delay > 0:
                await asyncio.sleep(self.token_delay * max_tokens)
            answer = {
                "id": rid,
                "object": api.object_name,
                "created": created,
                "model": model,
                "choices": api.body_choices(choices),
                "service_tier": None,
                "system_fingerprint": None,
                "usage": body_usage(prompt_tokens, completion_tokens),
                **api.trailing_nulls,
            }
            self.metrics.finish(prompt_tokens, completion_tokens, reasons)
            return json_response(answer)
        finally:
            self.metrics.running -= 1

    async def chat(self, body: dict, writer: asyncio.StreamWriter) -> Response:
        messages = body.get("messages")
        if not isinstance(messages, list):
            return self.errors.missing_field("messages", body)
        prompt_text = " ".join(
            content_text(m.get("content")) for m in messages if isinstance(m, dict)
        )
        prompt_tokens = len(words_of(prompt_text))
        max_tokens, problem = self.max_tokens_of(body, prompt_tokens)
        if problem:
            return problem
        assert max_tokens is not None
        n = body.get("n") or 1
        n = n if isinstance(n, int) and 1 <= n <= 64 else 1
        thinking = True
        kwargs = body.get("chat_template_kwargs")
        if isinstance(kwargs, dict) and kwargs.get("enable_thinking") is False:
            thinking = False
        use_reasoning = bool(self.cfg.reasoning_parser) and thinking

        choices = []
        for i in range(n):
            r_n = max_tokens // 2 if use_reasoning else 0
            reasoning_words = gen_words(prompt_text + "#r", r_n, REASONING_VOCAB)
            content_words, reason = generate(
                prompt_text + f"#{i}", max_tokens - r_n, body.get("stop")
            )
            choices.append((reasoning_words, content_words, reason))
        completion_tokens = sum(len(r) + len(w) for r, w, _ in choices)
        return await self.answer(
            writer, body, self.chat_api, choices, prompt_tokens, completion_tokens, max_tokens
        )

    async def completions(self, body: dict, writer: asyncio.StreamWriter) -> Response:
        if "prompt" not in body:
            return self.errors.missing_field("prompt", body)
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            prompts = list(prompt)
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            prompts = [" ".join(str(t) for t in prompt)]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, list) for p in prompt):
            prompts = [" ".join(str(t) for t in p) for p in prompt]
        else:
            return self.errors.error(
                "Either prompt or prompt_embeds must be provided and non-empty."
            )
        prompt_tokens_each = [len(words_of(p)) for p in prompts]
        max_tokens, problem = self.max_tokens_of(body, max(prompt_tokens_each))
        if problem:
            return problem
        assert max_tokens is not None
        results = [generate(p, max_tokens, body.get("stop")) for p in prompts]
        prompt_tokens = sum(prompt_tokens_each)
        completion_tokens = sum(len(w) for w, _ in results)
        return await self.answer(
            writer, body, self.text_api, results, prompt_tokens, completion_tokens, max_tokens
        )
