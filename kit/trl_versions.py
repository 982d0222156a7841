"""Which config keys each TRL release reads: the training side's version table.

A training job runs ``trl sft`` or ``trl dpo`` with a YAML config the kit renders
(:mod:`kit.train.config`). TRL renames and removes keys between releases
(``max_seq_length`` -> ``max_length`` in 0.20, ``torch_dtype`` -> ``dtype`` from 0.23 with the old
name gone in 0.29, ``max_prompt_length`` gone from DPO in 0.29), and an unknown key in a config
file is silently ignored by TRL's parser, so a stale key would train with a default instead of
the value asked for. The kit therefore refuses every key the pinned release lacks, rendered or
given in a job's ``trl_args``, and names the release that has it.

The table is ``kit/data/trl_config_keys.json`` (``train/dump_trl_keys.py``): for each release,
the fields of TRL's own config classes (SFTConfig, DPOConfig, ModelConfig, ScriptArguments,
DatasetMixtureConfig) read from the released wheel; for the pinned release, the real ``trl sft``
and ``trl dpo`` parsers' keys, transformers' TrainingArguments included. Keys that TRL does not
define come from TrainingArguments (``learning_rate``, ``max_steps``, ...); for releases other
than the pinned one they are taken as the pinned transformers has them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

#: what the CPU training image pins (train/train.lock) and the production image documents
TRL_VERSION = "1.16.0"
PEFT_VERSION = "0.21.2"
TRANSFORMERS_VERSION = "5.24.0"
ACCELERATE_VERSION = "1.15.0"
TORCH_VERSION = "2.13.0"

#: the TRL command that trains each method (distillation fine-tunes the student on the
#: teacher's answers: supervised fine-tuning on collected data)
COMMANDS = {"sft": "sft", "dpo": "dpo", "distill": "sft"}

_DATA = Path(__file__).resolve().parent / "data" / "trl_config_keys.json"


@dataclass(frozen=True)
class Rename:
    old: str
    new: str
    #: the first release that reads ``new``; the first that no longer reads ``old``
    new_from: str
    old_gone: str | None


#: renames seen in the table, for messages that say what to write instead
RENAMES = (
    Rename("max_seq_length", "max_length", "0.19.1", "0.20.0"),
    Rename("torch_dtype", "dtype", "0.23.1", "0.29.1"),
)


def _vkey(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


@cache
def _table() -> dict[str, object]:
    return json.loads(_DATA.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def versions() -> tuple[str, ...]:
    return tuple(_table()["versions"])  # type: ignore[arg-type]


def _trl_keys(version: str, method: str) -> frozenset[str]:
    keys = _table()["keys"]
    return frozenset(keys[version][COMMANDS.get(method, method)])  # type: ignore[index]


@cache
def trainer_keys(method: str) -> frozenset[str]:
    """Keys TRL takes from transformers' TrainingArguments (not defined by TRL itself)."""
    own: set[str] = set()
    sources = _table()["source"]
    for v in versions():
        if sources[v] == "source":  # type: ignore[index]
            own |= _trl_keys(v, method)
    return _trl_keys(TRL_VERSION, method) - own


def check_version(version: str) -> str | None:
    """None when the table knows ``version``, else why not."""
    if version in versions():
        return None
    return (
        f"TRL {version} is not in the kit's table ({', '.join(versions())}); the kit renders "
        f"configs for those releases (pinned: {TRL_VERSION})"
    )


def keys(version: str, method: str) -> frozenset[str]:
    """Every config key ``trl <command>`` of ``version`` reads for ``method``."""
    own = _trl_keys(version, method)
    if _table()["source"][version] == "parser":  # type: ignore[index]
        return own
    return own | trainer_keys(method)


def key_problem(key: str, version: str, method: str) -> str | None:
    """Why ``key`` cannot go into a ``method`` config for TRL ``version``, or None."""
    if key in keys(version, method):
        return None
    for r in RENAMES:
        if key == r.old and r.old_gone and _vkey(version) >= _vkey(r.old_gone):
            return f"TRL {version} no longer reads {key!r} (gone in {r.old_gone}): use {r.new!r}"
        if key == r.new and _vkey(version) < _vkey(r.new_from):
            return f"TRL {version} does not read {key!r} yet (from {r.new_from}): use {r.old!r}"
    having = [v for v in versions() if key in keys(v, method)]
    where = f"; releases that read it: {', '.join(having)}" if having else ""
    return f"TRL {version} has no config key {key!r} for {COMMANDS[method]}{where}"
