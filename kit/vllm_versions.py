"""Everything the kit knows about how vLLM's command line changes between versions.

This is the one table. Templates never test versions; :mod:`kit.plan` asks this module
which flags a service needs for the version a stack pins, and how to translate the old
flags people copy from notes (``--task embed``, ``--enable-reasoning``).

Sources for each row are listed in ``docs/vllm-versions.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

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


#: Oldest and newest versions the table describes. Older is refused; newer is allowed
#: with a warning (the newest rules are assumed).
OLDEST = V("0.8.0")
NEWEST = V("0.32.0")


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
# --task was deprecated in 0.10.1 for --runner/--convert and rejected from 0.13.
POOLING_FLAGS: dict[str, tuple[Rule, ...]] = {
    "embed": (
        Rule(V("0.0.0"), V("0.10.1"), ("--task", "embed")),
        Rule(V("0.10.1"), None, ("--runner", "pooling", "--convert", "embed")),
    ),
    "rerank": (
        Rule(V("0.0.0"), V("0.10.1"), ("--task", "score")),
        Rule(V("0.10.1"), None, ("--runner", "pooling", "--convert", "classify")),
    ),
    "chat": (Rule(V("0.0.0"), None, ()),),
}

#: Old --task values and the kind they mean (for translating extra_args).
TASK_TO_KIND: dict[str, str] = {
    "embed": "embed",
    "embedding": "embed",
    "score": "rerank",
    "classify": "rerank",
    "generate": "chat",
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

#: The chat message field that carries reasoning text.
REASONING_FIELD: tuple[Rule, ...] = (
    Rule(V("0.0.0"), V("0.16.0"), ("reasoning_content",)),
    Rule(V("0.16.0"), None, ("reasoning",)),
)

#: Reasoning parser name -> first version that registers it (``--reasoning-parser``).
REASONING_PARSERS: dict[str, Version] = {
    "deepseek_r1": V("0.8.0"),
    "granite": V("0.8.0"),
    "qwen3": V("0.8.5"),
}

#: Tool-call parser name -> first version that registers it (``--tool-call-parser``).
TOOL_PARSERS: dict[str, Version] = {
    "hermes": V("0.8.0"),
    "mistral": V("0.8.0"),
    "llama3_json": V("0.8.0"),
    "internlm": V("0.8.0"),
    "jamba": V("0.8.0"),
    "granite": V("0.8.0"),
    "granite-20b-fc": V("0.8.0"),
    "pythonic": V("0.8.0"),
}


# --- queries --------------------------------------------------------------------------------


def _pick(rules: tuple[Rule, ...], v: Version) -> Rule:
    for r in rules:
        if r.covers(v):
            return r
    raise LookupError(f"no rule covers vLLM {v}")  # pragma: no cover - table is total


def pooling_flags(kind: str, v: Version) -> tuple[str, ...]:
    return _pick(POOLING_FLAGS[kind], v).value


def reasoning_flags(parser: str, v: Version) -> tuple[str, ...]:
    return (*_pick(ENABLE_REASONING, v).value, "--reasoning-parser", parser)


def reasoning_field(v: Version) -> str:
    return _pick(REASONING_FIELD, v).value[0]


def parsers_in(table: dict[str, Version], v: Version) -> list[str]:
    return sorted(name for name, since in table.items() if since <= v)


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
                errors.append("extra_args: --task needs a value")
                i += 1
                continue
            meant = TASK_TO_KIND.get(value)
            if meant is None:
                errors.append(f"extra_args: --task {value} is not a task the kit knows")
            elif meant != kind:
                errors.append(
                    f"extra_args: --task {value} means kind '{meant}' but the service is "
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
