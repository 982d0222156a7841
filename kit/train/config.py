"""The TRL config file of a job: values computed here, laid out by ``templates/train-*.j2``,
and every key checked against the TRL release the stack pins (:mod:`kit.trl_versions`).
"""

from __future__ import annotations

import json
import math
from typing import Any

import yaml

from kit import __version__
from kit import trl_versions as tv
from kit.train.jobplan import BASE_MOUNT, DATA_MOUNT, WORK_MOUNT, JobPlan
from kit.train.spec import Job

#: the data file inside the container (sft/dpo: the stack's file, mounted read-only; distill:
#: the teacher's answers the kit collected into the job's work folder)
DATA_FILE = f"{DATA_MOUNT}/train.jsonl"
DISTILL_FILE = f"{WORK_MOUNT}/teacher-answers.jsonl"
OUTPUT_DIR = f"{WORK_MOUNT}/out"
SAVE_TOTAL_LIMIT = 2

#: config keys the kit renders -> the job field that sets them (refused in trl_args)
OWNED_KEYS: dict[str, str] = {
    "model_name_or_path": "base",
    "dtype": "dtype",
    "torch_dtype": "dtype",
    "datasets": "data",
    "dataset_name": "data",
    "output_dir": "output",
    "max_steps": "steps",
    "num_train_epochs": "epochs",
    "learning_rate": "learning_rate",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "gradient_accumulation",
    "max_length": "max_length",
    "seed": "seed",
    "bf16": "dtype",
    "fp16": "dtype",
    "save_strategy": "checkpoint_every",
    "save_steps": "checkpoint_every",
    "save_total_limit": "checkpoint_every",
    "logging_steps": "(the kit logs every step for its progress display)",
    "report_to": "(the kit keeps the log history itself)",
    "use_peft": "lora / full",
    "lora_r": "lora.r",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "lora_target_modules": "lora.target_modules",
    "beta": "beta",
    "resume_from_checkpoint": "(kit train --resume)",
    "push_to_hub": "(adapters stay under adapters_root)",
}


def total_steps(job: Job, examples: int, n_gpus: int) -> int:
    """Optimizer steps of one run: ``steps``, or the epochs over the data."""
    if job.steps is not None:
        return job.steps
    per_step = job.batch_size * job.gradient_accumulation * max(1, n_gpus)
    return max(1, math.ceil(examples / per_step) * math.ceil(job.epochs or 1))


def build_config(job: Job) -> dict[str, Any]:
    """The values of the job's config (container paths), before layout."""
    c: dict[str, Any] = {
        "model_name_or_path": BASE_MOUNT,
        "dtype": job.dtype,
        "data_file": DISTILL_FILE if job.method == "distill" else DATA_FILE,
        "output_dir": OUTPUT_DIR,
        "max_steps": job.steps,
        "num_train_epochs": job.epochs if job.epochs is not None else 1,
        "learning_rate": job.learning_rate,
        "per_device_train_batch_size": job.batch_size,
        "gradient_accumulation_steps": job.gradient_accumulation,
        "max_length": job.max_length,
        "seed": job.seed,
        "bf16": job.dtype == "bfloat16",
        "fp16": job.dtype == "float16",
        "save_steps": job.checkpoint_every,
        "save_total_limit": SAVE_TOTAL_LIMIT,
        "use_peft": job.uses_lora,
        "beta": job.beta,
    }
    if job.uses_lora:
        c |= {
            "lora_r": job.lora.r,
            "lora_alpha": int(alpha) if (alpha := job.lora.lora_alpha).is_integer() else alpha,
            "lora_dropout": job.lora.dropout,
            "lora_target_modules": list(job.lora.target_modules),
        }
    return c


def render_config(
    plan: JobPlan, *, stack: str, trl_args: dict[str, Any], resume: bool = False
) -> str:
    """The YAML text of ``plan``'s config (``resume``: continue from the last checkpoint)."""
    from kit.jinja_env import environment

    template = "train-dpo.j2" if plan.trl_command == "dpo" else "train-sft.j2"
    return (
        environment()
        .get_template(template)
        .render(
            c=plan.config,
            job=plan.name,
            stack=stack,
            method=plan.method,
            command=plan.trl_command,
            kit_version=__version__,
            trl_version=plan.trl_version,
            resume=resume,
            extra=[(k, json.dumps(v)) for k, v in sorted(trl_args.items())],
        )
    )


def config_problems(
    text: str, *, method: str, version: str, trl_args: dict[str, Any]
) -> list[tuple[str, str]]:
    """``(field, message)`` for every key of a rendered config the TRL release lacks, and for
    trl_args that the kit sets itself."""
    out: list[tuple[str, str]] = []
    for key in trl_args:
        if key in OWNED_KEYS:
            out.append(("trl_args", f"{key!r} is set by the kit; use {OWNED_KEYS[key]} instead"))
    data = yaml.safe_load(text) or {}
    for key in data:
        why = tv.key_problem(str(key), version, method)
        if why:
            fieldname = "trl_args" if key in trl_args else "defaults.trl_version"
            out.append((fieldname, why))
    return out
