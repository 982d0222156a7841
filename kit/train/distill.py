"""Distillation data: the teacher's answers to the job's prompts, collected through the kit's
batch path from the running stack, become the student's supervised fine-tuning set.

The reasoning the teacher's server returns in its reasoning field is kept, in front of the
answer inside ``<think>...</think>`` (how DeepSeek-R1's distilled students were trained). The
batch files live in the job's work folder and are named after the prompts' content hash, so an
interrupted collection resumes where it stopped and changed prompts start afresh.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from kit.errors import KitError
from kit.eval import collect_answers
from kit.stack_plan import Plan
from kit.train.data import prompt_messages, read_lines
from kit.train.jobplan import JobPlan

ANSWERS_FILE = "teacher-answers.jsonl"


def with_reasoning(content: str, reasoning: str | None) -> str:
    if not reasoning:
        return content
    return f"<think>\n{reasoning.strip()}\n</think>\n\n{content}"


def collect(
    running: Plan, job: JobPlan, *, teacher_model: str | None, max_tokens: int, quiet: bool
) -> tuple[Path, int]:
    """Write the student's SFT set into the job's work folder; returns it and its size."""
    assert job.teacher is not None
    teacher = running.service(job.teacher)
    model = teacher_model or teacher.served_name
    rows = read_lines(Path(job.data_host_path))
    prompts = [prompt_messages(r) for r in rows]
    digest = hashlib.sha256(Path(job.data_host_path).read_bytes()).hexdigest()[:12]
    work = Path(job.work_host_path)
    answers = collect_answers(
        running, model, prompts, work / "teacher-batch", max_tokens=max_tokens,
        label=f"{digest}-{max_tokens}", quiet=quiet,
    )  # fmt: skip
    bad = [i for i, a in enumerate(answers) if a.error or not a.content.strip()]
    if bad:
        first = answers[bad[0]]
        raise KitError(
            f"job '{job.name}': the teacher {model!r} gave no answer to {len(bad)} of "
            f"{len(prompts)} prompts (first: prompt {bad[0] + 1}: {first.error or 'empty'})",
            hint="run `kit train` again: the answers already collected are kept",
        )
    out = work / ANSWERS_FILE
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for messages, a in zip(prompts, answers, strict=True):
            reply = {"role": "assistant", "content": with_reasoning(a.content, a.reasoning)}
            f.write(json.dumps({"messages": [*messages, reply]}) + "\n")
    tmp.replace(out)
    return out, len(prompts)
