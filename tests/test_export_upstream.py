"""`kit export k8s` against the real upstream schemas, vendored in kit/data/k8s/: the
production-stack chart's own values.schema.json (vllm-stack 0.1.12) and the openAPIV3Schema of
LWS's LeaderWorkerSet CRD (v0.10.0). Every stack's export passes them; broken documents fail
them; an export they reject is refused by `kit export` before anything is written. Offline: no
Helm and no cluster run here."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from kit.cli import cli
from kit.errors import LintError
from kit.export import export, upstream, values
from kit.plan import build_plan
from kit.spec import list_stacks, load_stack

REPO = Path(__file__).resolve().parent.parent
STACKS = list_stacks(REPO / "stacks")


@pytest.fixture(autouse=True)
def fixed_home(monkeypatch):
    monkeypatch.setenv("HOME", "/home/operator")


def docs(path: Path, fmt: str) -> list[dict[str, Any]]:
    (text,) = export(build_plan(load_stack(path)), fmt).files.values()
    return [d for d in yaml.safe_load_all(text) if d is not None]


def two_hosts(fmt: str) -> list[dict[str, Any]]:
    return docs(REPO / "stacks" / "two-hosts.yaml", fmt)


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.stem)
def test_every_stack_exports_what_the_upstream_schemas_accept(path: Path):
    (vals,) = docs(path, "production-stack")
    assert vals["servingEngineSpec"]["modelSpec"]
    assert upstream.values_problems(vals) == []
    for lws in (d for d in docs(path, "manifests") if d["kind"] == "LeaderWorkerSet"):
        assert upstream.lws_problems(lws) == []


def test_the_stacks_include_a_leaderworkerset_to_check():
    multi = [p.stem for p in STACKS if any(
        d["kind"] == "LeaderWorkerSet" for d in docs(p, "manifests"))]  # fmt: skip
    assert "two-hosts" in multi


def test_a_broken_values_document_is_rejected():
    (vals,) = two_hosts("production-stack")
    assert upstream.values_problems(vals) == []
    broken = copy.deepcopy(vals)
    first, second, *_ = broken["servingEngineSpec"]["modelSpec"]
    first["requestGPU"] = [8]  # the chart's type: integer, number or string
    first["raySpec"]["headNode"]["requestGPU"] = "8"  # the chart's type: integer
    second["vllmConfig"]["runner"] = "generate"  # the chart's enum: auto, pooling
    second["vllmConfig"]["tensorParallel"] = 2  # a key the chart does not know
    broken["routerSpec"]["routingLogic"] = "fastest"
    found = "\n".join(upstream.values_problems(broken))
    assert "modelSpec.0.requestGPU: [8] is not of type 'integer', 'number', 'string'" in found
    assert "modelSpec.0.raySpec.headNode.requestGPU: '8' is not of type 'integer'" in found
    assert "modelSpec.1.vllmConfig.runner: 'generate' is not one of ['auto', 'pooling']" in found
    assert "modelSpec.1.vllmConfig: Additional properties are not allowed" in found
    assert "'tensorParallel' was unexpected" in found
    assert "routerSpec.routingLogic: 'fastest' is not one of" in found


def test_unknown_keys_are_refused_though_helm_would_drop_them():
    """The chart's schema as Helm reads it lets an unknown key through (the chart then ignores
    it); read closed, it refuses it. Types and enums come from the chart either way."""
    (vals,) = two_hosts("production-stack")
    vals["servingEngineSpec"]["modelSpec"][0]["vllmConfig"]["tensorParalelSize"] = 8
    raw = json.loads((upstream.DATA / "production-stack-values.schema.json").read_text())
    assert list(jsonschema.Draft202012Validator(raw).iter_errors(vals)) == []
    assert any("'tensorParalelSize' was unexpected" in p for p in upstream.values_problems(vals))


def test_a_broken_leaderworkerset_is_rejected():
    (lws,) = (d for d in two_hosts("manifests") if d["kind"] == "LeaderWorkerSet")
    assert upstream.lws_problems(lws) == []
    broken = copy.deepcopy(lws)
    spec = broken["spec"]
    spec["startupPolicy"] = "LeaderFirst"
    spec["leaderWorkerTemplate"]["size"] = "2"
    spec["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["resourses"] = {}
    spec["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]["ports"] = [
        {"containerPort": [8000]}
    ]
    found = "\n".join(upstream.lws_problems(broken))
    where = "LeaderWorkerSet two-hosts-deepseek-r1: spec."
    assert f"{where}startupPolicy: 'LeaderFirst' is not one of" in found
    assert f"{where}leaderWorkerTemplate.size: '2' is not of type 'integer'" in found
    assert "workerTemplate.spec.containers.0: Additional properties are not allowed" in found
    assert "leaderTemplate.spec.containers.0.ports.0.containerPort" in found
    broken = {**lws, "apiVersion": "leaderworkerset.x-k8s.io/v1beta1"}
    assert upstream.lws_problems(broken) == [
        "LeaderWorkerSet two-hosts-deepseek-r1: apiVersion 'leaderworkerset.x-k8s.io/v1beta1' "
        "is not leaderworkerset.x-k8s.io/v1"
    ]


def test_an_export_the_chart_rejects_is_refused_before_it_is_written(monkeypatch, tmp_path):
    real = values.render
    monkeypatch.setattr(values, "render", lambda plan: real(plan).replace(
        'routingLogic: "roundrobin"', 'routingLogic: "fastest"'))  # fmt: skip
    with pytest.raises(LintError, match=r"routerSpec.routingLogic: 'fastest' is not one of"):
        export(build_plan(load_stack(REPO / "stacks" / "qwen3-retrieval.yaml")), "production-stack")
    res = CliRunner().invoke(cli, ["export", "k8s", "qwen3-retrieval", "--format",
                                   "production-stack", "-o", str(tmp_path)])  # fmt: skip
    assert res.exit_code == LintError.exit_code, res.output
    assert "breaks the production-stack chart vllm-stack 0.1.12" in res.output
    assert list(tmp_path.iterdir()) == []


def test_the_multi_host_model_takes_the_charts_ray_path():
    (vals,) = two_hosts("production-stack")
    (model, *_) = vals["servingEngineSpec"]["modelSpec"]
    assert model["raySpec"]["enabled"] is True  # the chart renders a RayCluster only then


def test_the_vendored_schemas_are_the_recorded_upstream_files():
    source = (upstream.DATA / "SOURCE.md").read_text()
    schema = upstream.DATA / "production-stack-values.schema.json"
    digest = hashlib.sha256(schema.read_bytes()).hexdigest()
    assert f"`{digest}`" in source  # byte for byte the recorded upstream file
    assert "tag `vllm-stack-0.1.12`" in source and "tag `v0.10.0`" in source
    assert re.search(r"commit `[0-9a-f]{40}`", source)
    assert source.count("License: Apache-2.0") == 2
    lws = json.loads((upstream.DATA / "leaderworkerset-v1.schema.json").read_text())
    assert "LeaderWorkerSet is the Schema" in lws["description"]
    assert {"apiVersion", "kind", "metadata", "spec", "status"} <= set(lws["properties"])


@pytest.mark.parametrize("name", ["production-stack-values.schema.json",
                                  "leaderworkerset-v1.schema.json"])  # fmt: skip
def test_the_schemas_are_valid_json_schemas_as_read(name: str):
    validator = upstream._validator(name)
    type(validator).check_schema(validator.schema)  # the closed form too
    expected = jsonschema.Draft202012Validator if "values" in name else jsonschema.Draft4Validator
    assert type(validator) is expected
