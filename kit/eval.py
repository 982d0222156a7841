"""``kit eval``: held-out prompts answered by several models of a running stack, side by side.

Each model (a service's served name, or a LoRA adapter a service serves) answers every
held-out prompt through the kit's batch path (:mod:`kit.batch`: bounded concurrency, retries,
resumable output), greedily (temperature 0). A line's ``expected`` field is scored with one
stated metric:

- ``contains``: the answer contains ``expected`` (case-sensitive);
- ``startswith``: the answer, stripped, starts with ``expected``;
- ``exact``: the answer, stripped, equals ``expected``, stripped.

Results go to ``results/STACK/eval-TIME/``: ``MODEL.jsonl`` (the batch output, every answer),
``answers.jsonl`` (prompt, expected and each model's answer and score per line) and
``summary.json`` (the metric and each model's rate).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit import kinds, wire
from kit.errors import KitError
from kit.service_plan import ServicePlan
from kit.stack_plan import Plan
from kit.train.data import prompt_messages
from kit.train.serving import adapters_in

METRICS = ("contains", "startswith", "exact")


@dataclass(frozen=True)
class Answer:
    content: str
    reasoning: str | None
    error: str | None


def model_service(plan: Plan, model: str) -> ServicePlan:
    """The chat service that serves ``model``: its served name, or an adapter it lists."""
    for s in plan.services:
        if kinds.kind(s.kind).generates and (
            s.served_name == model or model in adapters_in(s.engine_args)
        ):
            return s
    known = []
    for s in plan.services:
        if kinds.kind(s.kind).generates:
            known += [s.served_name, *adapters_in(s.engine_args)]
    raise KitError(
        f"no chat service of '{plan.stack.name}' serves a model {model!r}",
        hint=f"models served: {', '.join(known) or 'none'}",
    )


def _answer(line: dict[str, Any]) -> Answer:
    if line.get("error"):
        err = line["error"]
        return Answer("", None, f"{err.get('code')}: {err.get('message')}")
    body = (line.get("response") or {}).get("body") or {}
    try:
        msg = body["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return Answer("", None, "no choices[0].message in the answer")
    reasoning = None
    for name in wire.reasoning_fields():
        if isinstance(msg.get(name), str) and msg[name]:
            reasoning = msg[name]
            break
    return Answer(msg.get("content") or "", reasoning, None)


def collect_answers(
    plan: Plan,
    model: str,
    prompts: list[list[dict[str, str]]],
    folder: Path,
    *,
    max_tokens: int,
    label: str | None = None,
    quiet: bool = True,
    concurrency: int = 8,
) -> list[Answer]:
    """Ask ``model`` every prompt through the batch path; the batch files stay in ``folder``
    (``LABEL.requests.jsonl``, ``LABEL.jsonl``), so a second call resumes where one stopped."""
    from kit.batch import BatchOptions, prepare_batch, run_batch
    from kit.cli_batch import BatchProgress
    from kit.report import console

    service = model_service(plan, model)
    # the batch path sends every request to the service's served name: ask the model instead
    asked = dataclasses.replace(service, served_name=model)
    sub = dataclasses.replace(
        plan, services=tuple(asked if s.name == service.name else s for s in plan.services)
    )
    label = label or model
    folder.mkdir(parents=True, exist_ok=True)
    requests = folder / f"{label}.requests.jsonl"
    output = folder / f"{label}.jsonl"
    with requests.open("w", encoding="utf-8") as f:
        for i, messages in enumerate(prompts):
            body = {"model": model, "messages": messages, "max_tokens": max_tokens,
                    "temperature": 0}  # fmt: skip
            line = {"custom_id": f"p{i}", "method": "POST", "url": wire.CHAT, "body": body}
            f.write(json.dumps(line) + "\n")
    job = prepare_batch(sub, service.name, requests, output,
                        BatchOptions(concurrency=concurrency))  # fmt: skip
    summary = run_batch(job, BatchProgress(console(stderr=True), label, quiet=quiet))
    by_id: dict[str, Answer] = {}
    with output.open(encoding="utf-8") as f:
        for raw in f:
            if raw.strip():
                obj = json.loads(raw)
                by_id[obj["custom_id"]] = _answer(obj)
    if not summary.ok and summary.not_run:
        raise KitError(f"{model}: {summary.not_run} prompts were not answered")
    return [by_id.get(f"p{i}", Answer("", None, "no answer")) for i in range(len(prompts))]


def score(answer: str, expected: str, metric: str) -> bool:
    if metric == "contains":
        return expected in answer
    if metric == "startswith":
        return answer.strip().startswith(expected.strip())
    if metric == "exact":
        return answer.strip() == expected.strip()
    raise ValueError(f"unknown metric {metric!r}")


@dataclass
class ModelScore:
    model: str
    service: str
    answered: int
    hits: int
    total: int

    @property
    def rate(self) -> float:
        return self.hits / self.total if self.total else 0.0


@dataclass
class EvalResult:
    metric: str
    scores: list[ModelScore]
    rows: list[dict[str, Any]]
    folder: Path


def read_heldout(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise KitError(f"held-out file {path} not found")
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except ValueError as exc:
                raise KitError(f"{path}: line {n}: not valid JSON ({exc})") from None
            ok = (
                isinstance(obj, dict)
                and isinstance(obj.get("expected"), str)
                and (isinstance(obj.get("prompt"), str) or isinstance(obj.get("messages"), list))
            )
            if not ok:
                raise KitError(
                    f'{path}: line {n}: held-out lines are {{"prompt": "...", "expected": '
                    '"..."}} (or "messages" instead of "prompt")'
                )
            rows.append(obj)
    if not rows:
        raise KitError(f"held-out file {path} has no lines")
    return rows


def run_eval(
    plan: Plan,
    models: list[str],
    data: Path,
    *,
    metric: str = "contains",
    max_tokens: int = 64,
    results_dir: Path = Path("results"),
) -> EvalResult:
    if metric not in METRICS:
        raise KitError(f"--metric {metric!r}: use one of {', '.join(METRICS)}")
    if not models:
        raise KitError("--models names no model")
    rows_in = read_heldout(data)
    services = {m: model_service(plan, m) for m in models}  # every name checked before asking
    folder = results_dir / plan.stack.name / f"eval-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 2
    while folder.exists():
        folder = folder.with_name(f"{folder.name.split('~')[0]}~{n}")
        n += 1
    prompts = [prompt_messages(r) for r in rows_in]
    answers = {
        m: collect_answers(plan, m, prompts, folder, max_tokens=max_tokens, label=_safe(m))
        for m in models
    }
    scores = []
    rows: list[dict[str, Any]] = []
    for i, r in enumerate(rows_in):
        row: dict[str, Any] = {"prompt": prompts[i][-1]["content"], "expected": r["expected"]}
        for m in models:
            a = answers[m][i]
            row[m] = {"answer": a.content, "hit": score(a.content, r["expected"], metric),
                      "error": a.error}  # fmt: skip
        rows.append(row)
    for m in models:
        got = [answers[m][i] for i in range(len(rows_in))]
        scores.append(
            ModelScore(
                model=m,
                service=services[m].name,
                answered=sum(1 for a in got if a.error is None),
                hits=sum(1 for row in rows if row[m]["hit"]),
                total=len(rows_in),
            )
        )
    with (folder / "answers.jsonl").open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    summary = {
        "stack": plan.stack.name,
        "data": str(data),
        "metric": metric,
        "max_tokens": max_tokens,
        "models": [dataclasses.asdict(s) | {"rate": s.rate} for s in scores],
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return EvalResult(metric, scores, rows, folder)


def _safe(model: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
