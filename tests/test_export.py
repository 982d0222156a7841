"""`kit export k8s`: golden files for the shipped stacks, the manifests against the Kubernetes
schemas (kubernetes-validate, two Kubernetes versions, strict), the production-stack values
against the chart's own schema, and what maps how (tests/test_export_upstream.py: the upstream schemas
themselves). Offline: no cluster runs here, so nothing here proves a cluster accepts or runs
them beyond those schemas."""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from kit.cli import cli
from kit.export import export
from kit.export.validate import manifest_problems, values_problems
from kit.plan import build_plan
from kit.spec import list_stacks, load_stack, parse_stack

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "k8s"
# sim-* and real-* stacks point at folders on this machine: their exports depend on it
SHIPPED = [p for p in list_stacks(REPO / "stacks") if not p.stem.startswith(("sim-", "real-"))]
ALL = list_stacks(REPO / "stacks")


@pytest.fixture(autouse=True)
def fixed_home(monkeypatch):
    monkeypatch.setenv("HOME", "/home/operator")


def files(path: Path, fmt: str) -> dict[str, str]:
    return export(build_plan(load_stack(path)), fmt).files


@pytest.mark.parametrize("fmt", ["manifests", "production-stack"])
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_golden(path: Path, fmt: str):
    for name, text in files(path, fmt).items():
        golden = GOLDEN / name
        if os.environ.get("KIT_UPDATE_GOLDEN") == "1":
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(text)
        assert golden.exists(), f"missing {golden}: run KIT_UPDATE_GOLDEN=1 pytest {__file__}"
        expected = golden.read_text()
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True)))
        assert text == expected, f"export differs from {golden.name}:\n{diff}"
        assert files(path, fmt)[name] == text  # deterministic


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_every_stack_exports_valid_objects(path: Path):
    (manifests,) = files(path, "manifests").values()
    assert manifest_problems(manifests) == []
    (values,) = files(path, "production-stack").values()
    assert values_problems(values) == []


def test_the_validators_catch_what_a_cluster_would_refuse():
    (text,) = files(REPO / "stacks" / "two-hosts.yaml", "manifests").values()
    docs = list(yaml.safe_load_all(text))
    deploy = next(d for d in docs if d and d["kind"] == "Deployment")
    deploy["spec"]["template"]["spec"]["containers"][0]["resourses"] = {}  # a typo
    lws = next(d for d in docs if d and d["kind"] == "LeaderWorkerSet")
    lws["spec"]["leaderWorkerTemplate"]["size"] = "2"  # a string
    lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["ports"] = [
        {"containerPort": "http"}
    ]
    found = manifest_problems(yaml.safe_dump_all(docs))
    assert any(
        "Deployment two-hosts-embed" in p and "'resourses' was unexpected" in p for p in found
    )
    assert any("LeaderWorkerSet" in p and "leaderWorkerTemplate.size" in p for p in found)
    assert any("workerTemplate (Kubernetes 1.29.0)" in p and "containerPort" in p for p in found)
    (values,) = files(REPO / "stacks" / "two-hosts.yaml", "production-stack").values()
    data = yaml.safe_load(values)
    data["servingEngineSpec"]["modelSpec"][0]["requestGPU"] = [8]
    data["servingEngineSpec"]["modelSpec"][1]["vllmConfig"]["tensorParallel"] = 2
    found = values_problems(yaml.safe_dump(data))
    assert any("modelSpec.0.requestGPU" in p for p in found)
    assert any("'tensorParallel' was unexpected" in p for p in found)


# --- what maps how ---------------------------------------------------------------------------


def plan_of(data: dict[str, Any]):  # type: ignore[no-untyped-def]
    return build_plan(parse_stack(yaml.safe_dump(data)))


def stack(version: str = "0.11.0", **svc: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "x",
        "host": {"gpus": 8, "gpu_memory_gib": 80},
        "defaults": {"image": f"vllm/vllm-openai:v{version}"},
        "services": svc,
    }


def objects(plan) -> dict[tuple[str, str], dict[str, Any]]:  # type: ignore[no-untyped-def]
    (text,) = export(plan, "manifests").files.values()
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(text) if d}


def values(plan) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    (text,) = export(plan, "production-stack").files.values()
    return yaml.safe_load(text)["servingEngineSpec"]["modelSpec"]


def test_gpus_ports_probes_and_model_source_map():
    plan = plan_of(stack(
        chat={"kind": "chat", "model": "org/chat", "gpus": [2, 3], "port": 9001,
              "startup_timeout": 905, "max_model_len": 4096},
    ))  # fmt: skip
    objs = objects(plan)
    pod = objs[("Deployment", "x-chat")]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["resources"]["limits"] == {"nvidia.com/gpu": 2}  # a count: ids 2,3 do not map
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 905
    assert c["startupProbe"]["failureThreshold"] == math.ceil(905 / 10)
    assert c["args"][:7] == ["org/chat", "--served-model-name", "chat", "--host", "0.0.0.0",
                             "--port", "8000"]  # fmt: skip
    svc = objs[("Service", "x-chat")]["spec"]
    assert svc["ports"][0] == {"name": "http", "port": 9001, "targetPort": 8000, "protocol": "TCP"}
    assert svc["type"] == "ClusterIP"
    (m,) = values(plan)
    assert (m["requestGPU"], m["modelURL"], m["vllmConfig"]["maxModelLen"]) == (2, "org/chat", 4096)


def test_version_aware_flags_reach_both_formats():
    old = plan_of(stack("0.9.2", e={"kind": "embed", "model": "org/e", "gpus": 1, "port": 9001}))
    new = plan_of(stack("0.32.0", e={"kind": "embed", "model": "org/e", "gpus": 1, "port": 9001}))
    assert values(old)[0]["vllmConfig"]["extraArgs"][-2:] == ["--task", "embed"]
    assert values(new)[0]["vllmConfig"]["extraArgs"][-4:] == [
        "--runner",
        "pooling",
        "--convert",
        "embed",
    ]
    args = objects(new)[("Deployment", "x-e")]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-4:] == ["--runner", "pooling", "--convert", "embed"]
    # the chart writes prefix caching itself: vLLM's default per kind, never twice
    assert values(new)[0]["vllmConfig"]["enablePrefixCaching"] is False


def test_the_api_key_stays_in_a_secret(tmp_path):
    key = tmp_path / "llm.env"
    key.write_text("VLLM_API_KEY=sk-very-secret-value-123456\n")
    data = stack(chat={"kind": "chat", "model": "org/chat", "gpus": 1, "port": 9001})
    data["defaults"]["api_key_env_file"] = str(key)
    plan = plan_of(data)
    for fmt in ("manifests", "production-stack"):
        (text,) = export(plan, fmt).files.values()
        assert "sk-very-secret" not in text
        assert f"kubectl create secret generic x-env --from-env-file={key}" in text
    c = objects(plan)[("Deployment", "x-chat")]["spec"]["template"]["spec"]["containers"][0]
    assert c["envFrom"] == [{"secretRef": {"name": "x-env"}}]


def test_a_modelscope_pull_source_is_downloaded_from_modelscope_in_the_pod():
    data = stack(chat={"kind": "chat", "model": "org/chat", "gpus": 1, "port": 9001,
                       "pull": {"repo": "qwen/Qwen3-8B", "hub": "modelscope"}})  # fmt: skip
    data["defaults"].update(model_root="/srv/models", modelscope_endpoint="https://ms.example")
    plan = plan_of(data)
    c = objects(plan)[("Deployment", "x-chat")]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"]}
    # vLLM asks ModelScope (not Hugging Face) for the repo, at ModelScope's revision
    assert env["VLLM_USE_MODELSCOPE"] == "True"
    assert env["MODELSCOPE_ENDPOINT"] == "https://ms.example"
    assert c["args"][0] == "qwen/Qwen3-8B" and c["args"][-2:] == ["--revision", "master"]
    (m,) = values(plan)
    assert {"name": "VLLM_USE_MODELSCOPE", "value": "True"} in m["env"]
    hf = plan_of(stack(chat={"kind": "chat", "model": "org/chat", "gpus": 1, "port": 9001}))
    c = objects(hf)[("Deployment", "x-chat")]["spec"]["template"]["spec"]["containers"][0]
    assert "VLLM_USE_MODELSCOPE" not in {e["name"] for e in c["env"]}


def test_a_model_over_two_hosts_is_one_leaderworkerset_group():
    plan = build_plan(load_stack(REPO / "stacks" / "two-hosts.yaml"))
    objs = objects(plan)
    lws = objs[("LeaderWorkerSet", "two-hosts-deepseek-r1")]["spec"]["leaderWorkerTemplate"]
    assert lws["size"] == 2
    leader = lws["leaderTemplate"]["spec"]["containers"][0]
    worker = lws["workerTemplate"]["spec"]["containers"][0]
    assert leader["resources"]["limits"] == worker["resources"]["limits"] == {"nvidia.com/gpu": 8}
    assert leader["args"][-8:] == ["--nnodes", "2", "--node-rank", "0", "--master-addr",
                                   "$(LWS_LEADER_ADDRESS)", "--master-port", "29501"]  # fmt: skip
    assert worker["args"][-9:] == ["--nnodes", "2", "--node-rank", "$(LWS_WORKER_INDEX)",
                                   "--master-addr", "$(LWS_LEADER_ADDRESS)", "--master-port",
                                   "29501", "--headless"]  # fmt: skip
    assert "startupProbe" in leader and "startupProbe" not in worker
    service = objs[("Service", "two-hosts-deepseek-r1")]["spec"]
    assert service["selector"] == {"leaderworkerset.sigs.k8s.io/name": "two-hosts-deepseek-r1",
                                   "role": "leader"}  # fmt: skip
    (m, *_) = values(plan)
    assert (m["replicaCount"], m["raySpec"]["headNode"]["requestGPU"]) == (1, 8)
    assert m["vllmConfig"]["extraArgs"][-2:] == ["--distributed-executor-backend", "ray"]
    assert "--nnodes" not in m["vllmConfig"]["extraArgs"]


def test_cli_export(tmp_path):
    res = CliRunner().invoke(cli, ["export", "k8s", "qwen3-retrieval", "--format",
                                   "production-stack", "-o", str(tmp_path)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert values_problems((tmp_path / "qwen3-retrieval.values.yaml").read_text()) == []
    res = CliRunner().invoke(cli, ["export", "k8s", "qwen3-retrieval"])
    assert res.exit_code == 0 and "kind: Deployment" in res.stdout
