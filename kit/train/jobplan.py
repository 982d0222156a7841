"""A training job as planned: where everything is, which GPUs, what it needs.

A plain dataclass (no kit.plan import), so :class:`kit.stack_plan.Plan` can hold a tuple of them and
the deployment record can write and read them back like service plans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: inside the training container
BASE_MOUNT = "/base"
DATA_MOUNT = "/data"
WORK_MOUNT = "/work"
RUN_MOUNT = "/run"
#: inside serving containers: the adapters folder, read-only
ADAPTERS_MOUNT = "/adapters"
#: the jobs' working folders (checkpoints, collected data) under adapters_root
WORK_DIR = ".kit-work"


@dataclass(frozen=True)
class JobPlan:
    name: str
    method: str
    #: ``trl sft`` or ``trl dpo``
    trl_command: str
    #: the base model folder on the host, and where it came from ("base" or "service NAME")
    base_host_path: str
    base_from: str
    #: the data file on the host and its number of examples (distill: prompts)
    data_host_path: str
    data_lines: int
    teacher: str | None
    gpus: tuple[int, ...]
    auto_placed: bool
    output: str
    #: adapters_root/OUTPUT (the published adapter) and adapters_root/.kit-work/JOB
    adapter_host_path: str
    work_host_path: str
    serve: str | None
    full: bool
    lora_r: int | None
    lora_alpha: float | None
    lora_dropout: float | None
    target_modules: tuple[str, ...]
    #: optimizer steps of one run (max_steps, or epochs over the data)
    total_steps: int
    #: the TRL config, key -> value, as rendered (paths are the container's)
    config: dict[str, Any]
    #: the image the job runs (defaults.train_image), None when the stack names none
    image: str | None
    trl_version: str
    memory_gib: float | None = None
    memory_budget_gib: float | None = None
    memory_detail: str = ""
