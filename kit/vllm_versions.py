"""Everything the kit knows about how vLLM's command line changes between versions.

This is the one table. Templates never test versions; :mod:`kit.single_host_plan` asks this module
which flags a service needs for the version a stack pins, and how to translate the old
flags people copy from notes (``--task embed``, ``--enable-reasoning``).

Sources for each row are listed in ``docs/vllm-versions.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from kit import kinds

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:[.+-]?[A-Za-z0-9.+-]*)?$")


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> Version:
        m = _VERSION.match(text.strip())
        if not m:
            raise ValueError(f"{text!r} is not a vLLM version such as 0.11.0")
        return cls(int(m[1]), int(m[2]), int(m[3] or 0))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return (self.major, self.minor, self.patch) < (other.major, other.minor, other.patch)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def V(text: str) -> Version:
    return Version.parse(text)


#: Oldest and newest versions the table describes (checked against released vLLM source,
#: see docs/vllm-versions.md). Older is refused; newer is allowed with a warning.
OLDEST = V("0.8.5")
NEWEST = V("0.33.0")


@dataclass(frozen=True)
class Rule:
    """A span of versions ``[since, until)`` and what holds in it."""

    since: Version
    until: Version | None
    value: tuple[str, ...]
    note: str = ""

    def covers(self, v: Version) -> bool:
        return self.since <= v and (self.until is None or v < self.until)


# --- pooling (embed / rerank) ---------------------------------------------------------------
# --task was deprecated in 0.10.1 for --runner/--convert and rejected from 0.13. Keyed by the
# pooling conversion a kind asks for (kit.kinds: Kind.pooling).
POOLING_FLAGS: dict[str, tuple[Rule, ...]] = {
    "embed": (
        Rule(V("0.0.0"), V("0.10.1"), ("--task", "embed")),
        Rule(V("0.10.1"), None, ("--runner", "pooling", "--convert", "embed")),
    ),
    "classify": (
        Rule(V("0.0.0"), V("0.10.1"), ("--task", "score")),
        Rule(V("0.10.1"), None, ("--runner", "pooling", "--convert", "classify")),
    ),
}

TASK_DEPRECATED = V("0.10.1")
TASK_REMOVED = V("0.13.0")

# --- reasoning --------------------------------------------------------------------------------
# --enable-reasoning was required with --reasoning-parser before 0.9, a no-op in 0.9 and an
# error from 0.10.
ENABLE_REASONING: tuple[Rule, ...] = (
    Rule(V("0.0.0"), V("0.9.0"), ("--enable-reasoning",)),
    Rule(V("0.9.0"), V("0.10.0"), (), "--enable-reasoning is a deprecated no-op in 0.9"),
    Rule(V("0.10.0"), None, (), "--enable-reasoning was removed in 0.10"),
)

#: The chat message field(s) that carry reasoning text: 0.11.1-0.15 send both.
REASONING_FIELD: tuple[Rule, ...] = (
    Rule(V("0.0.0"), V("0.11.1"), ("reasoning_content",)),
    Rule(V("0.11.1"), V("0.16.0"), ("reasoning", "reasoning_content")),
    Rule(V("0.16.0"), None, ("reasoning",)),
)

#: vLLM's own default for --gpu-memory-utilization.
DEFAULT_GPU_MEMORY_UTILIZATION: tuple[Rule, ...] = (
    Rule(V("0.0.0"), V("0.20.0"), ("0.90",)),
    Rule(V("0.20.0"), None, ("0.92",)),
)

# --- one model over several hosts (kit.multinode) ------------------------------------------------
# Ray: a Ray cluster over the hosts; vllm serve runs once, on the head, with the Ray executor
# (every version of the table). Native: vLLM's own launch without Ray, --nnodes/--node-rank/
# --master-addr/--master-port on every host (rank 0 serves the API, the others --headless), with
# the mp executor: the flags appear in vLLM 0.11.1 (vllm/engine/arg_utils.py; 0.11.0 has none)
# and vLLM refuses --nnodes > 1 with any other executor. Values in {} are filled per host.
_NATIVE = ("--distributed-executor-backend", "mp", "--nnodes", "{nnodes}", "--node-rank", "{rank}",
           "--master-addr", "{master_addr}", "--master-port", "{master_port}")  # fmt: skip
MULTINODE_FLAGS: dict[str, tuple[Rule, ...]] = {
    "ray": (Rule(V("0.0.0"), None, ("--distributed-executor-backend", "ray")),),
    "native": (Rule(V("0.11.1"), None, _NATIVE),),
}
#: what the hosts after the first add in the native recipe (no API server there)
NATIVE_HEADLESS = ("--headless",)


@dataclass(frozen=True)
class Span:
    """A name registered from ``since`` until (not including) ``until``."""

    since: Version
    until: Version | None = None

    def covers(self, v: Version) -> bool:
        return self.since <= v and (self.until is None or v < self.until)


def _spans(text: str) -> dict[str, Span]:
    """``"0.8.5: a b; 0.9.0: c"`` -> names with their first version; ``name<0.24.0`` ends one."""
    out: dict[str, Span] = {}
    for group in text.split(";"):
        since, _, names = group.partition(":")
        for name in names.split():
            name, _, until = name.partition("<")
            out[name] = Span(V(since.strip()), V(until) if until else None)
    return out


#: ``--reasoning-parser`` names by the first release that registers them.
REASONING_PARSERS: dict[str, Span] = _spans(
    "0.8.5: deepseek_r1 granite; 0.9.0: qwen3; 0.10.0: hunyuan_a13b mistral glm4_moe<0.10.1;"
    "0.10.1: glm45 step3 GptOss<0.10.2; 0.10.2: openai_gptoss; 0.11.0: seed_oss;"
    "0.11.1: deepseek_v3 ernie45 kimi_k2 minimax_m2 minimax_m2_append_think olmo3;"
    "0.13.0: holo2; 0.15.1: step3p5; 0.18.0: nemotron_v3; 0.19.0: gemma4;"
    "0.20.0: deepseek_v4 hy_v3 mimo; 0.21.0: cohere_command3 cohere_command4 poolside_v1;"
    "0.24.0: glm47 minimax_m3; 0.26.0: inkling; 0.27.0: kimi_k3; 0.28.0: ling3 muse_glimmer;"
    "0.29.0: hy_v4; 0.30.0: deepseek_v41 k2_horizon; 0.31.0: granite_thinking_parser;"
    "0.32.0: hf minicpmv plamo3; 0.33.0: beam muse musespark1x step5"
)

#: ``--tool-call-parser`` names by the first release that registers them.
TOOL_PARSERS: dict[str, Span] = _spans(
    "0.8.5: granite granite-20b-fc hermes internlm jamba llama3_json llama4_json mistral"
    " phi4_mini_json pythonic; 0.9.0: deepseek_v3 llama4_pythonic; 0.9.2: minimax<0.24.0 xlam;"
    "0.10.0: hunyuan_a13b kimi_k2 qwen3_coder glm4_moe<0.10.1; 0.10.1: glm45 step3;"
    "0.10.2: deepseek_v31 openai seed_oss; 0.11.0: longcat qwen3_xml;"
    "0.11.1: ernie45 minimax_m2 olmo3; 0.13.0: deepseek_v32 gigachat3;"
    "0.14.0: functiongemma glm47; 0.15.1: step3p5; 0.18.0: granite4; 0.19.0: gemma4;"
    "0.20.0: deepseek_v4 hy_v3 mimo; 0.21.0: cohere_command3 cohere_command4 lfm2 poolside_v1;"
    "0.22.0: apertus; 0.23.0: minicpm5; 0.24.0: minimax_m3; 0.26.0: inkling; 0.27.0: kimi_k3;"
    "0.28.0: dots ling3 muse_glimmer; 0.29.0: hy_v4; 0.30.0: deepseek_v41 k2_horizon;"
    "0.32.0: hf plamo3 qwen3_json; 0.33.0: beam muse musespark1x step5"
)


@dataclass(frozen=True)
class FlagChange:
    flag: str
    removed: Version
    instead: str
    #: dropped with a note where the flag only restated a default; else an error
    droppable: bool = False
    #: first release that has the flag (None: older than the table)
    added: Version | None = None

    def exists_in(self, v: Version) -> bool:
        return (self.added is None or not v < self.added) and v < self.removed


#: Flags people copy from old notes that later releases refuse (argparse errors).
REMOVED_FLAGS: tuple[FlagChange, ...] = (
    FlagChange("--device", V("0.10.0"), "nothing: vLLM detects the device", droppable=True),
    FlagChange(
        "--use-v2-block-manager", V("0.10.0"), "nothing: it is the only one", droppable=True
    ),
    FlagChange("--tokenizer-pool-size", V("0.10.0"), "nothing"),
    FlagChange("--num-scheduler-steps", V("0.10.1"), "nothing (multi-step scheduling is gone)"),
    FlagChange("--disable-async-output-proc", V("0.11.0"), "nothing"),
    FlagChange("--max-seq-len-to-capture", V("0.11.0"), "--max-cudagraph-capture-size"),
    FlagChange("--preemption-mode", V("0.11.0"), "nothing"),
    FlagChange("--rope-scaling", V("0.11.1"), "--hf-overrides '{\"rope_scaling\": ...}'"),
    FlagChange("--rope-theta", V("0.11.1"), "--hf-overrides '{\"rope_theta\": ...}'"),
    FlagChange("--override-pooler-config", V("0.12.0"), "--pooler-config"),
    FlagChange("--guided-decoding-backend", V("0.12.0"), "--structured-outputs-config"),
    FlagChange("--cuda-graph-sizes", V("0.13.0"), "--cudagraph-capture-sizes", added=V("0.9.0")),
    FlagChange("--disable-mm-preprocessor-cache", V("0.13.0"), "--mm-processor-cache-gb 0"),
    FlagChange(
        "--disable-log-requests",
        V("0.17.0"),
        "nothing: requests are not logged by default since 0.10.1",
        droppable=True,
    ),
    FlagChange("--swap-space", V("0.18.0"), "nothing (CPU swap space is gone)"),
    FlagChange("--disable-frontend-multiprocessing", V("0.19.0"), "nothing"),
)


# --- queries --------------------------------------------------------------------------------


def _pick(rules: tuple[Rule, ...], v: Version) -> Rule:
    for r in rules:
        if r.covers(v):
            return r
    raise LookupError(f"no rule covers vLLM {v}")  # pragma: no cover - table is total


def pooling_flags(kind: str, v: Version) -> tuple[str, ...]:
    """The flags that make vLLM ``v`` serve a service of ``kind`` (none for generation)."""
    pooling = kinds.kind(kind).pooling
    return () if pooling is None else _pick(POOLING_FLAGS[pooling], v).value


def reasoning_flags(parser: str, v: Version) -> tuple[str, ...]:
    return (*_pick(ENABLE_REASONING, v).value, "--reasoning-parser", parser)


def reasoning_field(v: Version) -> str:
    """The field to read reasoning from (the newer one where a version sends both)."""
    return _pick(REASONING_FIELD, v).value[0]


def reasoning_fields(v: Version) -> tuple[str, ...]:
    return _pick(REASONING_FIELD, v).value


def default_gpu_memory_utilization(v: Version) -> float:
    return float(_pick(DEFAULT_GPU_MEMORY_UTILIZATION, v).value[0])


def multinode_backends(v: Version) -> tuple[str, ...]:
    """vLLM's multi-node recipes that version ``v`` has."""
    return tuple(b for b, rules in MULTINODE_FLAGS.items() if any(r.covers(v) for r in rules))


def default_multinode_backend(v: Version) -> str:
    """vLLM's own launch where the version has it (no Ray needed), else Ray."""
    return "native" if "native" in multinode_backends(v) else "ray"


def multinode_flags(backend: str, v: Version, **values: object) -> tuple[str, ...]:
    """The flags of ``backend``'s recipe for vLLM ``v`` with ``values`` filled in (``nnodes``,
    ``rank``, ``master_addr``, ``master_port`` for native); ``ValueError`` if ``v`` lacks it."""
    rule = next((r for r in MULTINODE_FLAGS[backend] if r.covers(v)), None)
    if rule is None:
        since = min(r.since for r in MULTINODE_FLAGS[backend])
        raise ValueError(
            f"vLLM {v} has no {backend} multi-node launch (from {since}); use "
            f"{' or '.join(multinode_backends(v))}"
        )
    return tuple(a.format(**values) for a in rule.value)


def parsers_in(table: dict[str, Span], v: Version) -> list[str]:
    return sorted(name for name, span in table.items() if span.covers(v))


def parser_problem(table: dict[str, Span], name: str, v: Version) -> str | None:
    """Why ``name`` is not a parser in vLLM ``v``, or None."""
    span = table.get(name)
    if span is None:
        return f"unknown parser {name!r} for vLLM {v}; known: {', '.join(parsers_in(table, v))}"
    if v < span.since:
        return f"parser {name!r} needs vLLM {span.since} or newer, the stack pins {v}"
    if span.until is not None and not v < span.until:
        renamed = [n for n, s in table.items() if s.since == span.until]
        hint = f" (renamed: try {', '.join(renamed)})" if renamed else ""
        return f"parser {name!r} was removed in vLLM {span.until}{hint}"
    return None


def check_version(v: Version) -> str | None:
    """``None`` if the table covers ``v``; a warning if newer; raises if older."""
    if v < OLDEST:
        raise ValueError(
            f"vLLM {v} is older than the oldest version the kit knows ({OLDEST}); pin a newer image"
        )
    if v > NEWEST:
        return (
            f"vLLM {v} is newer than the kit's version table ({NEWEST}); "
            "rendering with the newest known flags"
        )
    return None


@dataclass(frozen=True)
class Translation:
    args: tuple[str, ...]
    notes: tuple[str, ...]
    #: problems with the flags, each a message for the extra_args field
    errors: tuple[str, ...]


def translate_legacy(args: tuple[str, ...], kind: str, v: Version) -> Translation:
    """Rewrite flags copied from old notes for version ``v``.

    ``--task X`` becomes what the kind needs on ``v`` (the kit renders pooling flags
    itself, so the flag is dropped with a note, or refused when it contradicts the kind);
    ``--enable-reasoning`` is dropped where it is a no-op or an error.
    """
    out: list[str] = []
    notes: list[str] = []
    errors: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        name, eq, inline = a.partition("=")
        if name == "--task":
            if eq:
                value = inline
                i += 1
            elif i + 1 < len(args):
                value = args[i + 1]
                i += 2
            else:
                errors.append("--task needs a value")
                i += 1
                continue
            meant = kinds.kind_of_task(value)
            if meant is None:
                errors.append(f"--task {value} is not a task the kit knows")
            elif meant != kind:
                errors.append(
                    f"--task {value} means kind '{meant}' but the service is "
                    f"kind '{kind}'; set kind: {meant} and drop --task"
                )
            else:
                flags = " ".join(pooling_flags(kind, v)) or "no flag"
                notes.append(
                    f"--task {value} translated to '{flags}' for vLLM {v} "
                    f"(--task is deprecated from {TASK_DEPRECATED} and rejected from "
                    f"{TASK_REMOVED}); the kind field renders it"
                )
            continue
        change = next((c for c in REMOVED_FLAGS if c.flag == name), None)
        if change is not None and change.added is not None and v < change.added:
            errors.append(f"{name} does not exist before vLLM {change.added}")
            i += 1
            continue
        if change is not None and not v < change.removed:
            has_value = not eq and i + 1 < len(args) and not args[i + 1].startswith("-")
            if change.droppable:
                notes.append(
                    f"{name} dropped: removed in vLLM {change.removed}; use {change.instead}"
                )
                i += 2 if has_value and name == "--device" else 1
                continue
            errors.append(f"{name} was removed in vLLM {change.removed}; use {change.instead}")
            i += 1
            continue
        if a == "--enable-reasoning":
            rule = _pick(ENABLE_REASONING, v)
            notes.append(
                "--enable-reasoning dropped from extra_args: "
                + (rule.note or "the kit adds it with reasoning_parser")
            )
            i += 1
            continue
        out.append(a)
        i += 1
    return Translation(tuple(out), tuple(notes), tuple(errors))


# --- /metrics names (read by kit.observe: kit top, kit bench's server-side series) -----------
# From the released sources (vllm/v1/metrics/loggers.py, vllm/engine/metrics.py): the KV-cache
# gauge vllm:gpu_cache_usage_perc (<= 0.8.5) got the name vllm:kv_cache_usage_perc in 0.9.0;
# the old name stayed, marked DEPRECATED, through 0.11 and is gone from 0.13. The other names
# the kit reads are the same in every version of the table (counters end in _total).
METRIC_NAMES: dict[str, tuple[Rule, ...]] = {
    "kv_cache_usage": (
        Rule(V("0.0"), V("0.9.0"), ("vllm:gpu_cache_usage_perc",)),
        Rule(V("0.9.0"), None, ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")),
    ),
    "running": (Rule(V("0.0"), None, ("vllm:num_requests_running",)),),
    "waiting": (Rule(V("0.0"), None, ("vllm:num_requests_waiting",)),),
    "preemptions": (Rule(V("0.0"), None, ("vllm:num_preemptions_total",)),),
    "generation_tokens": (Rule(V("0.0"), None, ("vllm:generation_tokens_total",)),),
    "ttft": (Rule(V("0.0"), None, ("vllm:time_to_first_token_seconds",)),),
}


def metric_names(role: str, v: Version) -> tuple[str, ...]:
    """The /metrics names vLLM ``v`` may use for ``role`` (a key of :data:`METRIC_NAMES`),
    the version's own first (a V0 engine of 0.9-0.11 still sends only the old one)."""
    return _pick(METRIC_NAMES[role], v).value
