"""Grafana provisioning for GPU hosts, checked as data (Grafana cannot run in these tests):
the datasource is the stack's Prometheus, the provider reads the kit's dashboard, and the
dashboard's queries use the metric names of the pinned vLLM version. The same queries run on
the real Prometheus in tests/integration/test_gateway_stack.py."""

from __future__ import annotations

import json

import pytest
import yaml

from kit import observe_grafana
from kit.errors import StackError
from kit.lint import lint_stack
from kit.plan import build_plan
from kit.render import render_compose
from kit.spec import parse_stack


def stack(version: str = "0.32.0", **obs) -> str:
    return yaml.safe_dump({
        "name": "gf", "host": {"gpus": 2, "gpu_memory_gib": 24},
        "defaults": {"image": f"vllm/vllm-openai:v{version}", "model_root": "/nonexistent"},
        "gateway": {"port": 19397},
        "observability": {"port": 19398, "grafana": True, **obs},
        "services": {"llm": {"kind": "chat", "model": "x", "gpus": 1, "replicas": 2}},
    })  # fmt: skip


def plan_of(text: str):
    return build_plan(parse_stack(text, source="gf.yaml", default_name="gf.yaml"))


def test_provisioning_points_grafana_at_the_stacks_prometheus():
    plan = plan_of(stack())
    ds = yaml.safe_load(observe_grafana.datasource(plan))["datasources"][0]
    assert (ds["type"], ds["url"], ds["uid"]) == ("prometheus", "http://prometheus:9090",
                                                  "kit-prometheus")  # fmt: skip
    prov = yaml.safe_load(observe_grafana.dashboards_provider(plan))["providers"][0]
    assert prov["type"] == "file"
    assert prov["options"]["path"] == "/var/lib/grafana/dashboards/kit"
    board = json.loads(observe_grafana.dashboard(plan))
    assert board["uid"] == "kit-vllm" and len(board["panels"]) == 7
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == ds["uid"]
        assert all(t["expr"] and t["datasource"]["uid"] == ds["uid"] for t in panel["targets"])


@pytest.mark.parametrize(("version", "kv"), [("0.8.5", "vllm:gpu_cache_usage_perc"),
                                             ("0.11.0", "vllm:kv_cache_usage_perc")])  # fmt: skip
def test_dashboard_queries_follow_the_pinned_version(version, kv):
    exprs = [e for qs in observe_grafana.queries(plan_of(stack(version))).values() for e, _ in qs]
    assert any(kv in e for e in exprs)
    other = {"vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc"} - {kv}
    assert not any(o in e for o in other for e in exprs)


def test_compose_carries_the_files_and_passes_lint(tmp_path):
    plan = plan_of(stack())
    compose = yaml.safe_load(render_compose(plan))
    gf = compose["services"]["grafana"]
    assert gf["ports"][0] == {"target": 3000, "published": "3000", "host_ip": "127.0.0.1",
                              "protocol": "tcp"}  # fmt: skip
    for name, content in observe_grafana.files(plan).items():
        assert compose["configs"][name]["content"].replace("$$", "$") == content
    path = tmp_path / "gf.yaml"
    path.write_text(stack())
    assert lint_stack(path).ok


def test_grafana_port_clash_is_refused():
    with pytest.raises(StackError) as exc:
        plan_of(stack(grafana={"port": 19398}))
    assert "19398 is the observability's port" in str(exc.value)
