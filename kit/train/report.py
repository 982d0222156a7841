"""The jobs part of ``kit plan``: each job's GPUs, base, data, memory estimate and output, and
the adapters each serving service lists."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.table import Table

from kit.train.serving import adapters_in

if TYPE_CHECKING:
    from kit.stack_plan import Plan


def jobs_table(plan: Plan) -> Table | None:
    if not plan.jobs:
        return None
    t = Table(title="training jobs (kit train)", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("job", "method", "GPUs", "base", "data", "steps", "LoRA", "memory/GPU", "output",
                "served by"):  # fmt: skip
        t.add_column(col)
    for j in plan.jobs:
        lora = "full" if j.full else f"r {j.lora_r} on {','.join(j.target_modules)}"
        mem = (
            f"{j.memory_gib:.1f}/{j.memory_budget_gib:.0f} GiB"
            if j.memory_gib is not None and j.memory_budget_gib is not None
            else "-"
        )
        t.add_row(j.name, j.method, ",".join(map(str, j.gpus)), j.base_from,
                  f"{j.data_lines} lines", str(j.total_steps), lora, mem, j.output,
                  j.serve or "-")  # fmt: skip
    return t


def adapter_lines(plan: Plan) -> list[str]:
    """``service: adapter, adapter`` for every service that serves adapters."""
    out = []
    for s in plan.services:
        if "--enable-lora" in s.engine_args:
            names = adapters_in(s.engine_args)
            waiting = [j.output for j in plan.jobs if j.serve == s.name and j.output not in names]
            text = ", ".join(names) or "none yet"
            if waiting:
                text += f" (not trained yet: {', '.join(waiting)})"
            out.append(f"{s.name}: {text}")
    return out
