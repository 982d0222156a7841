"""The gateway: stack fields, routes in the plan, the LiteLLM configuration and the compose
service generated from them, and probes of engines that publish no port."""

from __future__ import annotations

import pytest
import yaml

from kit.client import PortClosed
from kit.errors import KitError, StackError
from kit.gateway_plan import lora_names
from kit.gateway_probe import ExecProbe, target_endpoint
from kit.gateway_render import litellm_config
from kit.lint import lint_stack
from kit.plan import build_plan
from kit.render import render_compose
from kit.spec import parse_stack
from stackutil import BASE_STACK, deep_merge

SERVICES = {
    "llm": {"kind": "chat", "model": "org/llm", "gpus": 1, "replicas": 2,
            "served_name": "qwen", "extra_args": ["--enable-lora", "--lora-modules",
                                                  "sql=/models/org/llm/lora/sql",
                                                  '{"name": "chat-style", "path": "/x"}']},
    "emb": {"kind": "embed", "model": "org/emb", "gpus": [4]},
    "rr": {"kind": "rerank", "model": "org/rr", "gpus": [5], "port": 9105},
}  # fmt: skip


def stack_text(tmp_path, *, gateway: dict | None = None, key: bool = False, **extra) -> str:
    data = deep_merge(BASE_STACK, {"gateway": gateway or {"port": 19391}, **extra})
    data["services"] = SERVICES
    if key:
        env = tmp_path / "llm.env"
        env.write_text("VLLM_API_KEY=kit-test-secret-value\n")
        data["defaults"]["api_key_env_file"] = str(env)
    return yaml.safe_dump(data, sort_keys=False)


def plan_of(tmp_path, **kw):
    path = tmp_path / "gw.yaml"
    path.write_text(stack_text(tmp_path, **kw))
    return build_plan(parse_stack(path.read_text(), source=str(path), default_name=path.name,
                                  base_dir=tmp_path))  # fmt: skip


def test_routes_cover_every_model_replica_and_lora_adapter(tmp_path):
    g = plan_of(tmp_path).gateway
    assert [(r.model, r.backends, r.lora) for r in g.routes] == [
        ("qwen", ("llm-1", "llm-2"), False),
        ("sql", ("llm-1", "llm-2"), True),
        ("chat-style", ("llm-1", "llm-2"), True),
        ("emb", ("emb",), False),
        ("rr", ("rr",), False),
    ]
    assert g.models() == ("qwen", "sql", "chat-style", "emb", "rr")
    assert g.bind_address == "127.0.0.1" and g.strategy == "simple-shuffle"


def test_lora_names_in_every_spelling():
    assert lora_names(("--lora-modules", "a=/p", "b=/q", "--max-loras", "2")) == ("a", "b")
    assert lora_names(("--lora-modules=a=/p",)) == ("a",)
    assert lora_names(('--lora-modules', '{"name": "j", "path": "/p", "base_model_name": "m"}')) == ("j",)  # fmt: skip
    assert lora_names(("--enable-lora",)) == ()


def test_litellm_config_one_deployment_per_model_and_replica(tmp_path):
    cfg = yaml.safe_load(litellm_config(plan_of(tmp_path)))
    deps = [(m["model_name"], m["litellm_params"]["api_base"]) for m in cfg["model_list"]]
    assert deps == [
        ("qwen", "http://llm-1:8000/v1"), ("qwen", "http://llm-2:8000/v1"),
        ("sql", "http://llm-1:8000/v1"), ("sql", "http://llm-2:8000/v1"),
        ("chat-style", "http://llm-1:8000/v1"), ("chat-style", "http://llm-2:8000/v1"),
        ("emb", "http://emb:8000/v1"), ("rr", "http://rr:8000/v1"),
    ]  # fmt: skip
    assert all(m["litellm_params"]["model"] == f"hosted_vllm/{m['model_name']}"
               for m in cfg["model_list"])  # fmt: skip
    assert len({m["model_info"]["id"] for m in cfg["model_list"]}) == 8
    r = cfg["router_settings"]
    assert (r["routing_strategy"], r["num_retries"], r["cooldown_time"]) == (
        "simple-shuffle",
        2,
        30,
    )
    # no key file: LiteLLM must be told to start without a master key (it refuses otherwise)
    assert cfg["general_settings"]["dangerously_permit_weak_or_unset_master_key"] is True
    assert cfg["litellm_settings"]["require_auth_for_metrics_endpoint"] is False


def test_api_key_is_a_reference_never_the_value(tmp_path):
    plan = plan_of(tmp_path, key=True)
    cfg = yaml.safe_load(litellm_config(plan))
    assert cfg["general_settings"]["master_key"] == "os.environ/VLLM_API_KEY"
    assert "dangerously_permit_weak_or_unset_master_key" not in cfg["general_settings"]
    assert {m["litellm_params"]["api_key"] for m in cfg["model_list"]} == {
        "os.environ/VLLM_API_KEY"
    }
    compose = render_compose(plan)
    assert "kit-test-secret-value" not in compose
    gw = yaml.safe_load(compose)["services"]["gateway"]
    assert gw["env_file"] == [{"path": str(tmp_path / "llm.env"), "required": True}]


def test_compose_gateway_service_and_config_content(tmp_path):
    compose = yaml.safe_load(render_compose(plan_of(tmp_path, gateway={"port": 19392,
                                                                       "policy": "least-busy"})))  # fmt: skip
    gw = compose["services"]["gateway"]
    assert gw["image"] == "kit-gateway-litellm:1.106.12"
    assert gw["ports"] == [{"target": 4000, "published": "19392", "host_ip": "127.0.0.1",
                            "protocol": "tcp"}]  # fmt: skip
    assert gw["configs"] == [{"source": "gateway-config", "target": "/etc/kit/gateway.yaml"}]
    assert gw["security_opt"] == ["no-new-privileges:true"] and "privileged" not in gw
    cfg = yaml.safe_load(compose["configs"]["gateway-config"]["content"])
    assert cfg["router_settings"]["routing_strategy"] == "least-busy"
    # engines without a port are not published; one that asks keeps its port
    assert "ports" not in compose["services"]["emb"]
    assert compose["services"]["rr"]["ports"][0]["published"] == "9105"


def test_generated_compose_passes_schema_and_real_compose(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text(stack_text(tmp_path, key=True, observability={"port": 19393}))
    res = lint_stack(path)
    assert res.ok, res.problems


@pytest.mark.parametrize(
    ("gateway", "why"),
    [
        ({"port": 19391, "policy": "fastest"}, "policy 'fastest' is not one of"),
        ({"port": 19391, "engine": "vllm-router"}, "engine"),
        ({"port": 19391, "image": "kit-gateway-litellm:latest"}, "pinned tag"),
        ({"port": 9105}, "is the gateway's port"),
    ],
)
def test_bad_gateway_settings_are_refused(tmp_path, gateway, why):
    with pytest.raises(StackError) as exc:
        plan_of(tmp_path, gateway=gateway)
    assert why in str(exc.value)


def test_service_named_like_the_gateway_is_refused(tmp_path):
    data = yaml.safe_load(stack_text(tmp_path))
    data["services"]["gateway"] = data["services"].pop("emb")
    with pytest.raises(StackError) as exc:
        build_plan(parse_stack(yaml.safe_dump(data), default_name="gw.yaml"))
    assert "the name 'gateway' is taken" in str(exc.value)


def test_unpublished_service_needs_via_gateway(tmp_path):
    plan = plan_of(tmp_path)
    with pytest.raises(KitError) as exc:
        target_endpoint(plan, plan.service("emb"), None)
    assert "--via gateway" in exc.value.hint
    assert target_endpoint(plan, plan.service("emb"), "gateway").port == 19391
    assert target_endpoint(plan, plan.service("rr"), None).port == 9105


def test_exec_probe_parses_answers_and_caches():
    calls: list[list[str]] = []
    answers = iter(["closed", "kit-probe 200 ", 'kit-probe 200 {"data": [{"id": "m"}]}'])

    def run(service: str, argv: list[str]) -> str:
        calls.append(argv)
        return next(answers)

    probe = ExecProbe("llm-1", run, api_key="k", interval=0.0)
    with pytest.raises(PortClosed):
        probe.get("/health")
    assert probe.get("/health").status == 200
    assert probe.served_models(timeout=1) == (200, ["m"])
    assert calls[0][:2] == ["python3", "-c"] and calls[0][-2:] == ["/health", "k"]
    cached = ExecProbe("x", lambda s, a: calls.append(a) or "kit-probe 503 ", interval=60)
    n = len(calls)
    assert cached.get("/health").status == 503 and cached.get("/health").status == 503
    assert len(calls) == n + 1


def test_gateway_on_every_interface_without_a_key_is_warned(tmp_path):
    plan = plan_of(tmp_path, gateway={"port": 19394, "bind_address": "0.0.0.0"})
    assert any("gateway: bind_address 0.0.0.0" in w and "NO API key" in w for w in plan.warnings)
    assert not any(w.startswith("gateway:") for w in plan_of(tmp_path).warnings)
