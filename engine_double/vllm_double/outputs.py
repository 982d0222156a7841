"""What the simulated model computes, deterministically: a token is a whitespace-separated word;
generated text cycles through a fixed vocabulary from a point seeded by the prompt; relevance is
the Jaccard overlap of word sets; embeddings are seeded by a hash of the text, L2-normalised."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import struct
import zlib
from functools import lru_cache

VOCAB = (  # noqa: SIM905
    "the quick engine double answers every request with calm deterministic words while real "
    "GPUs rest somewhere else so tests stay fast and readable tokens flow one by one across "
    "the wire like a river of plain text that never changes between runs"
).split()
REASONING_VOCAB = (  # noqa: SIM905
    "let me think about this request carefully first then answer it step by step with care "
    "and check each part before writing the final reply"
).split()


def words_of(text: str) -> list[str]:
    return text.split()


def gen_words(seed_text: str, n: int, vocab=VOCAB) -> list[str]:
    if n <= 0:
        return []
    start = zlib.crc32(seed_text.encode("utf-8", "replace")) % len(vocab)
    size = len(vocab)
    return [vocab[(start + i) % size] for i in range(n)]


def content_text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return " ".join(parts)
    return str(content)


def apply_stop(words: list[str], stop) -> tuple[list[str], bool]:
    """Cut generation at the first stop string; returns (words, stopped)."""
    if not stop:
        return words, False
    stops = [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str) and s]
    if not stops:
        return words, False
    text = ""
    for i, w in enumerate(words):
        text = w if i == 0 else text + " " + w
        for s in stops:
            if s in text:
                return words[:i], True
    return words, False


def generate(seed_text: str, n: int, stop) -> tuple[list[str], str]:
    """`n` words seeded by `seed_text`, cut at a stop string, with the finish reason."""
    words, stopped = apply_stop(gen_words(seed_text, n), stop)
    return words, "stop" if stopped else "length"


def spaced(words: list[str]) -> list[str]:
    """Words as streamed text pieces: every piece after the first carries its leading space."""
    return [w if j == 0 else " " + w for j, w in enumerate(words)]


def usage_of(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }


def body_usage(prompt_tokens: int, completion_tokens: int) -> dict:
    """usage_of as a JSON body (not a streamed chunk) spells it."""
    usage = usage_of(prompt_tokens, completion_tokens)
    usage["prompt_tokens_details"] = None
    return usage


_WORD_RE = re.compile(r"[a-z0-9]+")


def word_set(text: str) -> frozenset[str]:
    return frozenset(_WORD_RE.findall(text.lower()))


def relevance(query: str, doc: str) -> float:
    """Deterministic relevance in [0, 1]: Jaccard overlap of lower-cased word sets."""
    q, d = word_set(query), word_set(doc)
    if not q or not d:
        return 0.0
    return len(q & d) / len(q | d)


@lru_cache(maxsize=8192)
def embedding_for(text: str, dim: int) -> tuple[float, ...]:
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8", "replace")).digest()[:8], "little")
    rng = random.Random(seed)
    vec = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(math.fsum(x * x for x in vec)) or 1.0
    return tuple(x / norm for x in vec)


@lru_cache(maxsize=8192)
def embedding_json(text: str, dim: int, fmt: str) -> str:
    vec = embedding_for(text, dim)
    if fmt == "base64":
        return json.dumps(base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode("ascii"))
    return json.dumps(vec, separators=(",", ":"))
