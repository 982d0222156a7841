"""The ``jobs:`` section of a stack file: typed training jobs.

Shape only (types, ranges, which fields go together); rules that need the whole stack or the
machine (services named, GPUs, data lines, the model's modules, memory) are in
:mod:`kit.train.plan`. :mod:`kit.spec` puts ``jobs: dict[str, Job]`` on the stack.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kit import gpus as gpu_models

#: adapter names become vLLM model names, folder names and --lora-modules keys
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
JOB_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
METHODS = ("sft", "dpo", "distill")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Lora(_Model):
    """LoRA settings (PEFT): rank, alpha, dropout and the modules that get adapters."""

    r: Annotated[int, Field(ge=1, le=512)] = 8
    #: default: twice the rank
    alpha: Annotated[float, Field(gt=0)] | None = None
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")

    @field_validator("target_modules", mode="before")
    @classmethod
    def _modules(cls, v: Any) -> tuple[str, ...]:
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list | tuple) or not v:
            raise ValueError("target_modules must be a non-empty list of module names")
        if not all(isinstance(m, str) and re.fullmatch(r"[A-Za-z0-9_.]+", m) for m in v):
            raise ValueError(f"target_modules must be module names such as q_proj, got {v!r}")
        return tuple(v)

    @property
    def lora_alpha(self) -> float:
        return self.alpha if self.alpha is not None else 2.0 * self.r


class Job(_Model):
    method: Literal["sft", "dpo", "distill"]
    #: a model folder under model_root (or absolute inside it); or ``service`` takes a chat
    #: service's model
    base: str | None = None
    service: str | None = None
    #: JSONL: chat ``messages`` (sft), ``prompt``/``chosen``/``rejected`` (dpo), prompts (distill)
    data: Annotated[str, Field(min_length=1)]
    #: distill: the chat service whose answers become the student's training set
    teacher: str | None = None
    #: distill: the model name asked on the teacher service (default: its served name; a
    #: LoRA adapter the service serves works too)
    teacher_model: str | None = None
    gpus: int | tuple[int, ...] = 1
    lora: Lora = Lora()
    #: full fine-tuning instead of LoRA (the result is a model folder, not an adapter)
    full: bool = False
    steps: Annotated[int, Field(ge=1)] | None = None
    epochs: Annotated[float, Field(gt=0)] | None = None
    learning_rate: Annotated[float, Field(gt=0, lt=1)] = 2e-4
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 4
    gradient_accumulation: Annotated[int, Field(ge=1, le=4096)] = 1
    max_length: Annotated[int, Field(ge=16)] = 1024
    seed: int = 0
    checkpoint_every: Annotated[int, Field(ge=1)] = 100
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    #: dpo: the KL weight of the preference loss
    beta: Annotated[float, Field(gt=0)] = 0.1
    #: distill: answer length asked of the teacher
    teacher_max_tokens: Annotated[int, Field(ge=1)] = 512
    #: the adapter's name: its folder under adapters_root and the served model name
    output: str
    #: the chat service that serves the result under ``output``
    serve: str | None = None
    #: more TRL config keys, checked against the pinned TRL release's keys
    trl_args: dict[str, str | int | float | bool | list[str]] = Field(default_factory=dict)

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, v: Any) -> int | tuple[int, ...]:
        return gpu_models.parse_gpus(v)

    @field_validator("output")
    @classmethod
    def _output(cls, v: str) -> str:
        if not ADAPTER_NAME.match(v):
            raise ValueError(
                f"output {v!r} must be a name of letters, digits, '.', '-' or '_' (it becomes "
                "a folder under adapters_root and the served model name)"
            )
        return v

    @field_validator("base")
    @classmethod
    def _base(cls, v: str | None) -> str | None:
        if v is not None and ".." in PurePosixPath(v).parts:
            raise ValueError(f"base {v!r} must not contain '..'")
        return v

    @model_validator(mode="after")
    def _together(self) -> Job:
        if (self.base is None) == (self.service is None):
            raise ValueError(
                "give the base model either as base (a folder under model_root) or as "
                "service (a chat service whose model it takes), not both or neither"
            )
        if self.method == "distill" and self.teacher is None:
            raise ValueError(
                "a distill job needs teacher: the chat service whose answers it learns"
            )
        if self.method != "distill" and (self.teacher or self.teacher_model) is not None:
            raise ValueError(f"teacher is for distill jobs; this job's method is {self.method}")
        if self.full and "lora" in self.model_fields_set:
            raise ValueError("full: true trains every weight; remove the lora settings")
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give steps or epochs, not both")
        if self.full and self.serve is not None:
            raise ValueError(
                "serve takes a LoRA adapter; a full fine-tune is a new model folder: serve it "
                "as a service's model"
            )
        return self

    @property
    def trl_command(self) -> str:
        return "dpo" if self.method == "dpo" else "sft"

    @property
    def uses_lora(self) -> bool:
        return not self.full


def check_jobs(jobs: dict[str, Job]) -> dict[str, Job]:
    """Job names and unique outputs (used by :class:`kit.spec.Stack`)."""
    seen: dict[str, str] = {}
    for name, job in jobs.items():
        if not JOB_NAME.match(name):
            raise ValueError(f"job name {name!r} must be lowercase letters, digits, '-' or '_'")
        if job.output in seen:
            raise ValueError(
                f"jobs '{seen[job.output]}' and '{name}' both write the adapter "
                f"{job.output!r}; give each job its own output"
            )
        seen[job.output] = name
    return jobs
