"""One endpoint for a whole stack, on the real Docker engine: the real LiteLLM gateway image
(scripts/build-gateway-image.sh) and the real Prometheus image (Debian's package,
scripts/build-prometheus-image.sh) in front of the ENGINE DOUBLE (two chat replicas on disjoint
GPUs, embeddings, rerank; no engine publishes a port).

Checked: `kit up` waits for every replica and the gateway; smoke through the gateway; a wrong
key is refused; requests spread over both replicas; Prometheus scrapes every engine and the
gateway and its generated config passes the real `promtool check config`; a replica killed
during `kit bench --via gateway` costs at most the requests in flight on it and `kit up`
brings just that one back.
"""

from __future__ import annotations

import json
import os
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

from dockerutil import SIM_MODELS, compose_down, in_ci, kill_container, project_containers
from kit.cli import cli
from kit.engine import Project
from kit.gateway_probe import ExecProbe, docker_exec
from kit.gateway_render import prometheus_config
from kit.record import deployed

REPO = Path(__file__).resolve().parents[2]
GATEWAY_IMAGE = os.environ.get("KIT_GATEWAY_IMAGE", "kit-gateway-litellm:1.106.12")
PROMETHEUS_IMAGE = os.environ.get("KIT_PROMETHEUS_IMAGE", "kit-prometheus:2.42.0")
GATEWAY_PORT, PROM_PORT = 19340, 19341
KEY = f"kit-it-{uuid.uuid4().hex}"
CHAT = "sim-qwen3-8b"


def kit(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def images(docker_engine) -> None:
    missing = [
        i
        for i in (GATEWAY_IMAGE, PROMETHEUS_IMAGE)
        if subprocess.run(["docker", "image", "inspect", i], capture_output=True).returncode
    ]
    if missing:
        why = f"images missing: {', '.join(missing)} (run `make gateway-image prometheus-image`)"
        if in_ci():
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="module")
def stack(images, docker_engine, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gw")
    old = os.environ.get("KIT_STATE_DIR")
    os.environ["KIT_STATE_DIR"] = str(folder / "state")
    data = yaml.safe_load((REPO / "stacks" / "sim-gateway.yaml").read_text())
    data["name"] = f"kit-gw-{uuid.uuid4().hex[:8]}"
    data["defaults"]["model_root"] = str(SIM_MODELS)
    (folder / "llm.env").write_text(f"VLLM_API_KEY={KEY}\n")
    data["defaults"]["api_key_env_file"] = str(folder / "llm.env")
    data["gateway"]["port"] = GATEWAY_PORT
    data["observability"] = {"port": PROM_PORT, "scrape_interval": 1}
    data["services"]["llm"]["env"]["KIT_DOUBLE_TOKEN_DELAY_MS"] = "4"
    path = folder / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    res = kit("up", str(path), "--image", docker_engine)
    try:
        assert res.exit_code == 0, res.output + res.stderr
        yield path, res
    finally:
        compose_down(data["name"])
        if old is None:
            os.environ.pop("KIT_STATE_DIR", None)
        else:
            os.environ["KIT_STATE_DIR"] = old


def replica_successes(plan, name: str) -> float:
    """Finished requests a replica counted (its /metrics, read inside its container)."""
    project = Project(plan)
    body = ExecProbe(name, docker_exec(project), interval=0).get("/metrics").body.decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith("vllm:request_success_total{")
    )


def test_up_waits_for_replicas_and_gateway_and_publishes_only_the_gateway(stack):
    path, res = stack
    out = res.output
    for name in ("llm-1", "llm-2", "embed", "rerank"):
        assert f"{name}: ready" in out
    assert f"gateway: ready at http://127.0.0.1:{GATEWAY_PORT}" in out
    assert f"prometheus: ready at http://127.0.0.1:{PROM_PORT}" in out
    compose = yaml.safe_load(Path(deployed(str(path)).folder / "docker-compose.yml").read_text())
    published = sorted(n for n, s in compose["services"].items() if "ports" in s)
    assert published == ["gateway", "prometheus"]
    status = kit("status", str(path))
    assert status.exit_code == 0
    for row in ("llm-1 ", "llm-2 ", "gateway "):
        assert row in status.stdout
    assert "0,1" in status.stdout and "2,3" in status.stdout and "lists all 3" in status.stdout


def test_smoke_every_model_through_the_gateway(stack):
    path, _ = stack
    res = kit("smoke", str(path))
    assert res.exit_code == 0, res.output
    assert "smoke: 11 passed, 0 failed" in res.output  # models + wrong key + 3 kinds x 3
    assert "wrong key refused" in res.output


def test_one_base_url_spreads_chat_over_both_replicas(stack):
    path, _ = stack
    plan = deployed(str(path)).plan
    before = {n: replica_successes(plan, n) for n in ("llm-1", "llm-2")}
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{GATEWAY_PORT}/v1", api_key=KEY)
    for _ in range(30):
        r = client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert r.choices[0].message.content
    emb = client.embeddings.create(model="sim-embed", input=["a", "b"])
    assert len(emb.data) == 2
    served = {n: replica_successes(plan, n) - before[n] for n in before}
    assert sum(served.values()) == 30
    assert min(served.values()) >= 5, served  # shuffle: both replicas take a share
    with pytest.raises(openai.APIStatusError):
        openai.OpenAI(base_url=f"http://127.0.0.1:{GATEWAY_PORT}/v1", api_key="wrong").models.list()


def test_prometheus_scrapes_every_engine_and_the_gateway(stack):
    path, _ = stack
    plan = deployed(str(path)).plan
    url = f"http://127.0.0.1:{PROM_PORT}/api/v1/targets"
    deadline = time.monotonic() + 30
    while True:
        targets = json.loads(urllib.request.urlopen(url, timeout=5).read())["data"]
        health = {t["labels"]["container"]: t["health"] for t in targets["activeTargets"]}
        if all(v == "up" for v in health.values()) and len(health) == 5:
            break
        assert time.monotonic() < deadline, health
        time.sleep(1)
    assert sorted(health) == ["embed", "gateway", "llm-1", "llm-2", "rerank"]
    q = urllib.parse.quote('count(vllm:num_requests_running{job="vllm"})')
    answer = json.loads(urllib.request.urlopen(
        f"http://127.0.0.1:{PROM_PORT}/api/v1/query?query={q}", timeout=5).read())  # fmt: skip
    assert answer["data"]["result"][0]["value"][1] == "4"
    assert plan.observability is not None


def test_generated_prometheus_config_passes_promtool(stack, tmp_path):
    path, _ = stack
    cfg = tmp_path / "kit.yml"
    cfg.write_text(prometheus_config(deployed(str(path)).plan))
    tmp_path.chmod(0o755)  # the image runs as the user prometheus
    cfg.chmod(0o644)
    done = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{tmp_path}:/c:ro",
         "--entrypoint", "promtool", PROMETHEUS_IMAGE, "check", "config", "/c/kit.yml"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr
    cfg.write_text(cfg.read_text().replace("scrape_interval: 1s", "scrape_interval: soon"))
    bad = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{tmp_path}:/c:ro",
         "--entrypoint", "promtool", PROMETHEUS_IMAGE, "check", "config", "/c/kit.yml"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode != 0  # the validator really validates


def test_a_dead_replica_costs_only_its_in_flight_requests_and_up_restores_it(stack, tmp_path):
    path, _ = stack
    name = deployed(str(path)).name
    parallel = 8
    result: dict[str, object] = {}

    def bench() -> None:
        result["res"] = kit("bench", str(path), "llm", "--via", "gateway", "-p", str(parallel),
                            "-n", "400", "--max-tokens", "32", "--read-timeout", "30",
                            "--max-failure-rate", "1", "--no-plots", "--results", str(tmp_path))  # fmt: skip

    t = threading.Thread(target=bench)
    t.start()
    time.sleep(3)
    victim = f"{name}-llm-1-1"
    kill_container(victim)
    t.join(timeout=180)
    assert not t.is_alive()
    (run,) = json.loads(next(tmp_path.rglob("summary.json")).read_text())["runs"]
    assert run["completed"] + run["failed"] == 400
    assert run["failed"] <= parallel, run  # at most what was in flight on the dead one
    assert run["completed"] >= 400 - parallel

    others = {c: _started(c) for c in (f"{name}-llm-2-1", f"{name}-embed-1", f"{name}-gateway-1")}
    res = kit("up", str(path), "--image", "kit-engine-double:dev")
    assert res.exit_code == 0, res.output + res.stderr
    assert "llm-1: ready" in res.output
    assert _state(victim) == "running"
    assert {c: _started(c) for c in others} == others  # nothing else was restarted
    assert len(project_containers(name)) == 6
    after = kit("smoke", str(path))
    assert after.exit_code == 0, after.output


def _state(container: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", "{{.State.Status}}", container],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip


def _started(container: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", "{{.State.StartedAt}}", container],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip


def test_grafana_dashboard_queries_run_on_the_real_prometheus(stack):
    """Grafana is not run here; its dashboard's PromQL is, on the stack's real Prometheus."""
    from kit import observe_grafana

    path, _ = stack
    plan = deployed(str(path)).plan
    exprs = [e for qs in observe_grafana.queries(plan).values() for e, _ in qs]
    assert len(exprs) == 8
    for expr in exprs:
        q = urllib.parse.urlencode({"query": expr})
        answer = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{PROM_PORT}/api/v1/query?{q}", timeout=5).read())  # fmt: skip
        assert answer["status"] == "success", (expr, answer)
    up = urllib.parse.urlencode({"query": exprs[-1]})
    result = json.loads(urllib.request.urlopen(
        f"http://127.0.0.1:{PROM_PORT}/api/v1/query?{up}", timeout=5).read())["data"]["result"]  # fmt: skip
    assert len(result) == 5


def test_batch_via_the_gateway(stack, tmp_path):
    path, _ = stack
    src = tmp_path / "in.jsonl"
    src.write_text("".join(
        json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": CHAT, "messages": [{"role": "user", "content": f"{i}"}],
                             "max_tokens": 4}}) + "\n"
        for i in range(6)))  # fmt: skip
    out = tmp_path / "out.jsonl"
    res = kit("batch", str(path), "llm", str(src), "-o", str(out), "-q")
    assert res.exit_code == 1 and "--via gateway" in res.stderr  # no port of its own
    res = kit("batch", str(path), "llm", str(src), "-o", str(out), "-q", "--via", "gateway")
    assert res.exit_code == 0, res.output + res.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(x["custom_id"] for x in lines) == [f"c{i}" for i in range(6)]
    assert all(x["response"]["status_code"] == 200 for x in lines)
