"""The kind registry: what a kind of service is, described once.

A kind says which OpenAI-compatible endpoints a service serves, which smoke checks prove them,
which load-test APIs and batch urls fit it, how long it may take to start, what memory its
runtime needs beside the weights, and which engine flags it owns. Every other module reads this
table instead of testing kind names itself; adding a kind (a training job, a gateway) adds an
entry here and a module of its own.

How a vLLM *version* spells the flags a kind needs lives in :mod:`kit.vllm_versions`; here a
kind only names what it needs (``pooling: "embed"``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    name: str
    summary: str
    #: generates text: a KV cache grows with the context, parsers and sampling apply
    generates: bool
    #: vLLM's pooling conversion (``--convert``; ``--task`` before 0.10.1), None for generation
    pooling: str | None
    #: ``kit bench --api`` values that fit; the first is the default
    bench_apis: tuple[str, ...]
    #: request urls ``kit batch`` accepts for this kind (those ``vllm run-batch`` accepts)
    batch_urls: tuple[str, ...]
    #: smoke checks (names of :data:`kit.smoke.CHECKS`), in the order they run
    smoke_checks: tuple[str, ...]
    #: seconds to start beside the weights' share (``startup_per_gib`` each), and when the
    #: model cannot be read here
    startup_base_s: int
    startup_unknown_s: int
    #: GiB per GPU the runtime needs beside weights and KV cache (activations, CUDA graphs)
    runtime_gib: float
    #: what a service of this kind reserves on a shared GPU when its model is unreadable, and
    #: the runtime beside its weights when the kit fills its fraction (None: it takes the rest)
    fill_reserve_gib: float | None
    fill_runtime_gib: float | None
    #: old ``--task`` values that mean this kind
    task_values: tuple[str, ...]
    #: engine flags only this kind may carry (other kinds are refused them), canonical spelling
    own_flags: tuple[str, ...] = ()


STARTUP_PER_GIB = 2.0

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            name="chat",
            summary="text generation: /v1/chat/completions and /v1/completions",
            generates=True,
            pooling=None,
            bench_apis=("chat", "completions"),
            batch_urls=("/v1/chat/completions",),
            smoke_checks=("health", "models", "chat", "chat stream"),
            startup_base_s=600,
            startup_unknown_s=1800,
            runtime_gib=2.0,
            fill_reserve_gib=None,
            fill_runtime_gib=None,
            task_values=("generate",),
            own_flags=(
                "--reasoning-parser",
                "--tool-call-parser",
                "--enable-auto-tool-choice",
                "--enable-reasoning",
            ),
        ),
        Kind(
            name="embed",
            summary="embeddings: /v1/embeddings",
            generates=False,
            pooling="embed",
            bench_apis=("embeddings",),
            batch_urls=("/v1/embeddings",),
            smoke_checks=("health", "models", "embeddings", "embedding single"),
            startup_base_s=300,
            startup_unknown_s=600,
            runtime_gib=1.0,
            fill_reserve_gib=4.0,
            fill_runtime_gib=1.5,
            task_values=("embed", "embedding"),
        ),
        Kind(
            name="rerank",
            summary="reranking and scores: /v1/rerank, /v1/score",
            generates=False,
            pooling="classify",
            bench_apis=("rerank",),
            batch_urls=("/v1/rerank", "/rerank", "/v2/rerank", "/v1/score", "/score"),
            smoke_checks=("health", "models", "rerank", "rerank top_n"),
            startup_base_s=300,
            startup_unknown_s=600,
            runtime_gib=1.0,
            fill_reserve_gib=4.0,
            fill_runtime_gib=1.5,
            task_values=("score", "classify"),
        ),
    )
}


def kind(name: str) -> Kind:
    """The registered kind ``name``; raises ``KeyError`` with the known names."""
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown kind {name!r}; known: {', '.join(KINDS)}") from None


def names() -> tuple[str, ...]:
    return tuple(KINDS)


def kind_of_task(task: str) -> str | None:
    """The kind an old ``--task`` value means, or None."""
    return next((k.name for k in KINDS.values() if task in k.task_values), None)


def kind_of_batch_url(url: str) -> str | None:
    return next((k.name for k in KINDS.values() if url in k.batch_urls), None)
