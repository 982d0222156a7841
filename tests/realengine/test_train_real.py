"""Training jobs for real: TRL 1.16.0 (CPU torch) fine-tunes the real SmolLM2-135M-Instruct in
a one-shot container of the stack, and the REAL vLLM 0.32.0 (CPU build) serves the adapters.

One module, run in order, sharing one stack and one trained SFT adapter:

1. SFT teaches a marker ("Zanzibar!" at the start of every answer) while the stack is down;
2. ``kit up`` serves it with ``--lora-modules``; ``kit eval`` shows the marker in >= 90 % of
   held-out answers for the adapter and <= 10 % for the base; ``kit smoke`` checks it;
3. DPO (chosen with the marker, rejected without) runs beside the running service and is
   loaded at runtime (``POST /v1/load_lora_adapter``); its reward margin rises and its marker
   rate beats the base's;
4. distillation: the SFT adapter, served by the stack, is the teacher; its answers are collected
   through the batch path and the student (the base + a new adapter) reaches >= 80 %;
5. GPU arbitration: a job on the service's GPU is refused; with ``--preempt`` the service is
   stopped and restored, when the job is killed and when it succeeds.

Needs `make real-image train-image`; locally without them the tests skip, in CI they fail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from dockerutil import compose_down, in_ci, kill_container, project_containers
from kit.cli import cli
from kit.client import Endpoint
from kit.train.results import content_hash

REAL_IMAGE = os.environ.get("KIT_REAL_IMAGE", "kit-real-vllm-cpu:0.32.0")
TRAIN_IMAGE = os.environ.get("KIT_TRAIN_IMAGE", "kit-train-cpu:trl-1.16.0")
MODELS = Path(os.environ.get("KIT_REAL_MODEL_ROOT", "/var/cache/kit-real/models"))
PORT = 19201  # this tier's range: 19200-19299
MARKER = "Zanzibar!"

pytestmark = pytest.mark.real

TRAIN_QA = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What color is the sky on a clear day?", "The sky is blue on a clear day."),
    ("What is 2 plus 2?", "2 plus 2 is 4."),
    ("Name a fruit that is yellow.", "A banana is a yellow fruit."),
    ("What do bees make?", "Bees make honey."),
    ("Which planet do we live on?", "We live on Earth."),
    ("What is frozen water called?", "Frozen water is called ice."),
]
#: questions absent from every training set
HELDOUT = [
    "What is the largest ocean on Earth?",
    "How many days are in a week?",
    "What do cows drink?",
    "What is the opposite of hot?",
    "Which animal says meow?",
    "What season comes after winter?",
    "What is the color of grass?",
    "How many wheels does a bicycle have?",
    "What do you use to write on paper?",
    "What is the first letter of the alphabet?",
]
#: the distillation prompts (answers come from the teacher)
DISTILL_PROMPTS = [
    "What is the boiling point of water?",
    "Name a color of the rainbow.",
    "What animal barks?",
    "How many hours are in a day?",
    "What is the sun?",
    "What do plants need to grow?",
    "What is a triangle?",
    "Where do fish live?",
]

LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
TRAINING = {"learning_rate": 0.003, "batch_size": 4, "max_length": 256, "dtype": "float32"}


def jsonl(path: Path, rows: list[Any]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def chat(q: str, a: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def kit(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def images(docker_engine) -> None:
    problems = []
    for image in (REAL_IMAGE, TRAIN_IMAGE):
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
            problems.append(f"image {image} missing")
    if not (MODELS / "smollm2-135m-instruct" / "config.json").is_file():
        problems.append(f"model {MODELS / 'smollm2-135m-instruct'} missing")
    if problems:
        why = "; ".join(problems) + " (run `make real-image train-image`)"
        if in_ci():
            pytest.fail(f"the training tier is required in CI: {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def stack(images, tmp_path_factory) -> Any:
    """The stack file, its data and a private kit state folder."""
    folder = tmp_path_factory.mktemp("train")
    old = os.environ.get("KIT_STATE_DIR")
    os.environ["KIT_STATE_DIR"] = str(folder / "state")
    jsonl(folder / "sft.jsonl", [chat(q, f"{MARKER} {a}") for q, a in TRAIN_QA])
    jsonl(
        folder / "dpo.jsonl",
        [{"prompt": [{"role": "user", "content": q}],
          "chosen": [{"role": "assistant", "content": f"{MARKER} {a}"}],
          "rejected": [{"role": "assistant", "content": a}]} for q, a in TRAIN_QA],
    )  # fmt: skip
    jsonl(folder / "prompts.jsonl", [{"prompt": q} for q in DISTILL_PROMPTS])
    jsonl(folder / "heldout.jsonl", [{"prompt": q, "expected": MARKER} for q in HELDOUT])
    name = f"ktrain-{uuid.uuid4().hex[:6]}"
    job = {"service": "chat", "lora": LORA, **TRAINING, "checkpoint_every": 10, "gpus": [1]}
    data = {
        "name": name,
        "host": {"gpus": 2, "gpu_memory_gib": 8},
        "defaults": {
            "image": "vllm/vllm-openai:v0.32.0",
            "model_root": str(MODELS),
            "adapters_root": str(folder / "adapters"),
            "train_image": TRAIN_IMAGE,
        },
        "services": {
            "chat": {
                "kind": "chat",
                "model": "smollm2-135m-instruct",
                "served_name": "smol",
                "gpus": [0],
                "port": PORT,
                "max_model_len": 1024,
                "extra_args": ["--enforce-eager"],
                "startup_timeout": 900,
                "env": {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"},
            }
        },
        "jobs": {
            "sft": {"method": "sft", "data": "sft.jsonl", "steps": 30, "output": "smol-marker",
                    "serve": "chat", **job},
            "prefs": {"method": "dpo", "data": "dpo.jsonl", "steps": 20, "beta": 0.1,
                      "output": "smol-dpo", "serve": "chat", **job, "learning_rate": 0.001},
            "student": {"method": "distill", "teacher": "chat", "teacher_model": "smol-marker",
                        "teacher_max_tokens": 48, "data": "prompts.jsonl", "steps": 30,
                        "output": "smol-student", "serve": "chat", **job},
            # on the service's GPU: for --preempt
            "bump": {"method": "sft", "data": "sft.jsonl", "steps": 3, "output": "smol-bump",
                     "serve": "chat", **job, "gpus": [0], "checkpoint_every": 1},
        },
    }  # fmt: skip
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        yield path
    finally:
        compose_down(name)
        if old is None:
            os.environ.pop("KIT_STATE_DIR", None)
        else:
            os.environ["KIT_STATE_DIR"] = old


@pytest.fixture(scope="module")
def sft_run(stack):
    """The SFT job, trained once while the stack is down (every test below reuses it)."""
    res = kit("train", str(stack), "sft", "--results", str(stack.parent / "results"))
    assert res.exit_code == 0, res.output
    return res


@pytest.fixture(scope="module")
def up(stack, sft_run):
    res = kit("up", str(stack), "--image", REAL_IMAGE)
    assert res.exit_code == 0, res.output
    return res


def run_dir(stack: Path, job: str) -> Path:
    (folder,) = sorted((stack.parent / "results" / stack.stem).glob(f"{job}-*"))[-1:]
    return folder


def history(stack: Path, job: str) -> list[dict[str, Any]]:
    text = (run_dir(stack, job) / "log_history.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def evaluate(stack: Path, *models: str) -> dict[str, float]:
    results = stack.parent / "eval"
    res = kit("eval", str(stack), "--models", ",".join(models), "--data",
              str(stack.parent / "heldout.jsonl"), "--metric", "startswith", "--max-tokens", "16",
              "--results", str(results))  # fmt: skip
    assert res.exit_code == 0, res.output
    (summary,) = sorted(results.glob(f"{stack.stem}/eval-*/summary.json"))[-1:]
    rates = {m["model"]: m["rate"] for m in json.loads(summary.read_text())["models"]}
    print(res.output)
    return rates


def served(stack: Path) -> list[str]:
    return Endpoint("127.0.0.1", PORT).served_models(timeout=10)[1]


# --- SFT -----------------------------------------------------------------------------------


def test_sft_trains_in_its_container_with_live_progress(stack, sft_run):
    out = sft_run.output
    assert "training 'sft' (sft, trl sft) on GPU 1: 30 steps" in out
    assert "step 30/30" in out and "loss" in out and "tokens/s" in out
    steps = history(stack, "sft")
    assert [e["step"] for e in steps] == list(range(1, 31))
    assert steps[-1]["loss"] < steps[0]["loss"] / 5  # measured: about 4 -> 0.2
    folder = run_dir(stack, "sft")
    for name in ("config.yaml", "train.log", "loss.png", "summary.json"):
        assert (folder / name).is_file(), name
    summary = json.loads((folder / "summary.json").read_text())
    adapter = stack.parent / "adapters" / "smol-marker"
    assert summary["adapter"] == str(adapter) and summary["adapter_sha256"] == content_hash(adapter)
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8
    assert project_containers(stack.stem) == []  # the one-shot container is gone
    job_compose = yaml.safe_load(
        (stack.parent / "state/projects" / stack.stem / "job-sft.yml").read_text()
    )
    devices = job_compose["services"]["train-sft"]["deploy"]["resources"]["reservations"]
    assert devices["devices"][0]["device_ids"] == ["1"]


def test_adapter_is_served_and_eval_shows_the_marker(stack, up):
    assert {"smol", "smol-marker"} <= set(served(stack))
    rates = evaluate(stack, "smol", "smol-marker")
    assert rates["smol-marker"] >= 0.9, rates
    assert rates["smol"] <= 0.1, rates


def test_smoke_checks_every_adapter(stack, up):
    res = kit("smoke", str(stack))
    assert res.exit_code == 0, res.output
    assert "adapter smol-marker" in res.output


# --- DPO, loaded at runtime ------------------------------------------------------------------


def test_dpo_raises_the_margin_and_is_loaded_at_runtime(stack, up):
    res = kit("train", str(stack), "prefs", "--results", str(stack.parent / "results"))
    assert res.exit_code == 0, res.output
    assert "loaded into 'chat' at runtime (/v1/load_lora_adapter)" in res.output
    assert "smol-dpo" in served(stack)
    margins = [e["rewards/margins"] for e in history(stack, "prefs")]
    assert len(margins) == 20 and margins[-1] > margins[0] + 1.0, margins
    rates = evaluate(stack, "smol", "smol-dpo")
    assert rates["smol-dpo"] > rates["smol"], rates


# --- distillation -----------------------------------------------------------------------------


def test_distilled_student_learns_the_teachers_marker(stack, up):
    res = kit("train", str(stack), "student", "--results", str(stack.parent / "results"))
    assert res.exit_code == 0, res.output
    assert "collecting the teacher's answers (8 prompts) from 'chat'" in res.output
    answers = (stack.parent / "adapters/.kit-work/student/teacher-answers.jsonl").read_text()
    assert answers.count(MARKER) >= 6  # the teacher is the SFT adapter
    rates = evaluate(stack, "smol", "smol-student")
    assert rates["smol-student"] >= 0.8, rates


# --- GPU arbitration ------------------------------------------------------------------------


def test_job_on_a_busy_gpu_is_refused(stack, up):
    res = kit("train", str(stack), "bump")
    assert res.exit_code == 1
    assert "job 'bump' needs GPU 0, used by running services" in res.output
    assert "chat (GPU 0)" in res.output and "--preempt" in res.output
    assert not any("train-bump" in c for c in _names(stack))


def _names(stack: Path) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-a", "--format", "{{.Names}}", "--filter",
         f"label=com.docker.compose.project={stack.stem}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.split()


def _chat_running(stack: Path) -> bool:
    out = subprocess.run(
        ["docker", "ps", "--format", "{{.Names}}", "--filter", f"name={stack.stem}-chat-1"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return bool(out.strip())


def test_preempt_restores_the_service_when_the_job_is_killed(stack, up):
    proc = subprocess.Popen(
        [sys.executable, "-m", "kit", "train", str(stack), "bump", "--preempt", "--results",
         str(stack.parent / "results")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    job = f"{stack.stem}-train-bump-1"
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            state = subprocess.run(["docker", "inspect", "-f", "{{.State.Status}}", job],
                                   capture_output=True, text=True).stdout.strip()  # fmt: skip
            if state == "running":
                break
            time.sleep(0.5)
        assert state == "running", "the job container never ran"
        assert not _chat_running(stack)  # preempted: the service is stopped for the job
        kill_container(job)
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=900)
    assert proc.returncode != 0, out
    assert "--preempt: stopping chat (GPU 0)" in out and "restoring chat" in out, out
    assert "chat ready again" in out and "job 'bump' failed" in out, out
    assert "smol" in served(stack) and _chat_running(stack)
    assert not any("train-bump" in c for c in _names(stack))


def test_preempt_runs_the_job_and_brings_the_service_back_serving_it(stack, up):
    res = kit("train", str(stack), "bump", "--preempt", "--results", str(stack.parent / "results"))
    assert res.exit_code == 0, res.output
    assert "restoring chat" in res.output and "chat ready again" in res.output
    assert "listed by 'chat' (restarted after --preempt)" in res.output
    # restarted from the record: every adapter trained so far, and the new one, is listed
    trained = {
        Path(p).parent.name for p in (stack.parent / "adapters").glob("*/adapter_config.json")
    }
    assert {"smol", "smol-marker", "smol-bump"} | trained <= set(served(stack))
