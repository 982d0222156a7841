"""Known ways a training job fails, recognised from its log, each with what to change."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainCause:
    key: str
    pattern: re.Pattern[str]
    title: str
    advice: str


def _c(key: str, pattern: str, title: str, advice: str) -> TrainCause:
    return TrainCause(key, re.compile(pattern, re.IGNORECASE | re.MULTILINE), title, advice)


CAUSES: tuple[TrainCause, ...] = (
    _c(
        "oom",
        r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory|"
        r"DefaultCPUAllocator: can't allocate memory",
        "out of memory",
        "the job does not fit its GPUs: lower batch_size (raise gradient_accumulation to keep "
        "the effective batch), lower max_length, use LoRA instead of full, or more GPUs",
    ),
    _c(
        "nan",
        r"loss'?: '?nan|loss is nan|nan loss",
        "the loss became NaN",
        "training diverged: lower learning_rate, use bfloat16 instead of float16, or check the "
        "data for empty or huge examples",
    ),
    _c(
        "modules",
        r"Target modules? .* not found in the base model|"
        r"None of the target modules were found",
        "LoRA target modules missing in the model",
        "name modules the base model has in lora.target_modules (`kit plan` lists them when "
        "they are wrong)",
    ),
    _c(
        "data",
        r"DatasetGenerationError|JSON parse error|ArrowInvalid|KeyError: '(messages|prompt|chosen|"
        r"rejected)'|Failed to load JSON",
        "the training data cannot be read",
        "check the data file: one JSON object per line in the method's shape (the kit checks "
        "the lines before it starts; this file changed since, or TRL reads a field differently)",
    ),
    _c(
        "model",
        r"does not appear to have a file named|Can't load tokenizer|is not a local folder|"
        r"Unrecognized model",
        "the base model cannot be loaded",
        "base must be a complete model folder (config.json, tokenizer, weights) under model_root",
    ),
    _c(
        "config",
        r"Unknown arguments from config file|error: unrecognized arguments|"
        r"error: argument --",
        "TRL refused the config",
        "a key or value is not what this TRL release takes: check trl_args and "
        "defaults.trl_version against the training image",
    ),
)


@dataclass(frozen=True)
class TrainDiagnosis:
    cause: TrainCause | None
    line: str | None

    def describe(self) -> str:
        if self.cause is None:
            return "no known cause recognised in the log; see the last lines above"
        where = f' (log: "{self.line.strip()[:200]}")' if self.line else ""
        return f"{self.cause.title}{where}: {self.cause.advice}"


def diagnose(log: str, *, oom_killed: bool = False, exit_code: int | None = None) -> TrainDiagnosis:
    for cause in CAUSES:
        m = cause.pattern.search(log)
        if m:
            start = log.rfind("\n", 0, m.start()) + 1
            end = log.find("\n", m.end())
            return TrainDiagnosis(cause, log[start : end if end >= 0 else None])
    if oom_killed or exit_code == 137:
        return TrainDiagnosis(CAUSES[0], f"the container was killed (exit {exit_code}, OOM killer)")
    return TrainDiagnosis(None, None)
