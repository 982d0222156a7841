"""What a benchmark sends: prompts from a dataset, turned into request bodies once.

Bodies are serialised to bytes before the run starts, so the hot loop only sends bytes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit import kinds, wire
from kit.errors import KitError

DATASETS = ("synthetic", "openqa", "messages")
APIS = tuple(wire.API_PATHS)
_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "that",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "his",
    "her",
    "are",
    "be",
    "this",
    "an",
    "which",
    "or",
    "model",
    "token",
    "memory",
    "tensor",
    "parallel",
    "batch",
    "cache",
    "server",
    "request",
    "latency",
    "throughput",
    "answer",
    "question",
    "river",
    "mountain",
    "city",
    "history",
    "science",
    "music",
    "light",
    "water",
    "energy",
    "market",
    "language",
    "time",
    "system",
    "data",
    "network",
    "number",
    "people",
    "world",
    "student",
    "class",
    "teacher",
    "problem",
    "solution",
]


@dataclass(frozen=True)
class WorkloadSpec:
    api: str
    dataset: str = "synthetic"
    dataset_path: Path | None = None
    prompt_tokens: int = 128
    max_tokens: int = 128
    stream: bool = True
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    temperature: float | None = 0.0
    min_prompt_length: int = 0
    max_prompt_length: int | None = None
    documents: int = 8
    seed: int = 0


def apis_for(kind: str) -> tuple[str, ...]:
    """The APIs a service of ``kind`` can be benchmarked with; the first is the default."""
    return kinds.kind(kind).bench_apis


@dataclass(frozen=True)
class Workload:
    api: str
    path: str
    stream: bool
    bodies: tuple[bytes, ...]
    prompt_chars: tuple[int, ...]

    def body(self, i: int) -> bytes:
        return self.bodies[i % len(self.bodies)]


def load_prompts(spec: WorkloadSpec, count: int) -> list[list[dict[str, Any]]]:
    """Chat messages per prompt (a single user message for text datasets)."""
    rng = random.Random(spec.seed)
    if spec.dataset == "synthetic":
        prompts = [
            [{"role": "user", "content": " ".join(rng.choices(_WORDS, k=spec.prompt_tokens))}]
            for _ in range(min(count, 1000))
        ]
    elif spec.dataset in ("openqa", "messages"):
        prompts = _read_jsonl(spec)
    else:
        raise KitError(f"unknown dataset {spec.dataset!r}; choose one of {', '.join(DATASETS)}")
    lo, hi = spec.min_prompt_length, spec.max_prompt_length
    kept = [m for m in prompts if lo <= _chars(m) <= (hi if hi is not None else 1 << 62)]
    if not kept:
        raise KitError(
            f"no prompts left from {spec.dataset_path or spec.dataset} after the length filter "
            f"({lo}..{hi if hi is not None else 'any'} characters)"
        )
    return kept


def _read_jsonl(spec: WorkloadSpec) -> list[list[dict[str, Any]]]:
    if spec.dataset_path is None:
        raise KitError(f"--dataset {spec.dataset} needs --dataset-path FILE.jsonl")
    try:
        lines = spec.dataset_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise KitError(f"cannot read dataset {spec.dataset_path}: {exc}") from None
    out: list[list[dict[str, Any]]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KitError(f"{spec.dataset_path}:{n}: not JSON ({exc.msg})") from None
        if spec.dataset == "openqa":
            q = obj.get("question") if isinstance(obj, dict) else None
            if not isinstance(q, str):
                raise KitError(f"{spec.dataset_path}:{n}: openqa lines need a 'question' string")
            out.append([{"role": "user", "content": q}])
        else:
            msgs = obj.get("messages") if isinstance(obj, dict) else obj
            if not (isinstance(msgs, list) and msgs and all(isinstance(m, dict) for m in msgs)):
                raise KitError(
                    f"{spec.dataset_path}:{n}: messages lines need a list of "
                    '{"role": ..., "content": ...} (or {"messages": [...]})'
                )
            out.append(msgs)
    if not out:
        raise KitError(f"dataset {spec.dataset_path} has no lines")
    return out


def _chars(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content", ""))) for m in messages)


def _text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(str(m.get("content", "")) for m in messages)


def build(spec: WorkloadSpec, model: str, count: int) -> Workload:
    if spec.api not in APIS:
        raise KitError(f"unknown API {spec.api!r}; choose one of {', '.join(APIS)}")
    prompts = load_prompts(spec, count)
    rng = random.Random(spec.seed + 1)
    bodies: list[bytes] = []
    for messages in prompts[: max(1, min(count, len(prompts)))]:
        body: dict[str, Any] = {"model": model}
        if spec.api in wire.GENERATION_APIS:
            if spec.api == "chat":
                body["messages"] = messages
            else:
                body["prompt"] = _text(messages)
            body["max_tokens"] = spec.max_tokens
            if spec.temperature is not None:
                body["temperature"] = spec.temperature
            if spec.stop:
                body["stop"] = list(spec.stop)
            if spec.ignore_eos:
                body["ignore_eos"] = True
            if spec.stream:
                body["stream"] = True
                body["stream_options"] = {"include_usage": True}
        elif spec.api == "embeddings":
            body["input"] = _text(messages)
        else:
            query = _text(messages)
            body["query"] = query
            body["documents"] = [
                " ".join(rng.choices(_WORDS, k=max(8, min(64, len(query.split())))))
                for _ in range(spec.documents)
            ]
        bodies.append(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())
    return Workload(
        api=spec.api,
        path=wire.API_PATHS[spec.api],
        stream=spec.stream and spec.api in wire.GENERATION_APIS,
        bodies=tuple(bodies),
        prompt_chars=tuple(_chars(m) for m in prompts[: len(bodies)]),
    )
