"""The gateway of a stack over several hosts and replicas of one model on different hosts
(kit.gateway_hosts): placement, the gateway's routes and API bases, the per-host compose files
(through their real validators), the record, and the refusals. No Docker needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kit import hosts, record
from kit.errors import StackError
from kit.gateway_render import litellm_config
from kit.lint import compose_config_problems, schema_problems
from kit.plan import build_plan
from kit.spec import parse_stack

D2 = "unix:///run/kit-docker2/docker.sock"


def stack_data(services: dict[str, Any] | None = None, **gateway: Any) -> dict[str, Any]:
    return {
        "name": "gwh",
        "hosts": {
            "a": {"gpus": 2, "gpu_memory_gib": 80, "address": "10.0.0.1"},
            "b": {"gpus": 2, "gpu_memory_gib": 80, "address": "10.0.0.2", "docker": D2},
        },
        "defaults": {"image": "vllm/vllm-openai:v0.32.0"},
        "gateway": {"port": 9400, **gateway},
        "services": services
        or {
            "chat": {
                "kind": "chat",
                "model": "org/chat",
                "replicas": 2,
                "hosts": ["a", "b"],
                "gpus": 1,
                "port": 9401,
            },
            "embed": {"kind": "embed", "model": "org/embed", "host": "a", "gpus": [1]},
        },
    }


def plan_of(data: dict[str, Any], tmp_path: Path | None = None):  # type: ignore[no-untyped-def]
    source = str(tmp_path / "gwh.yaml") if tmp_path else "<memory>"
    return build_plan(parse_stack(yaml.safe_dump(data), source=source, base_dir=tmp_path or "."))


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(StackError) as err:
        plan_of(data)
    return err.value.problems


def test_one_replica_per_listed_host_and_the_gateway_on_the_first():
    plan = plan_of(stack_data())
    by = {s.name: s for s in plan.services}
    assert {n: (s.host, s.replica_of, s.port) for n, s in by.items()} == {
        "chat-1": ("a", "chat", 9401),
        "chat-2": ("b", "chat", 9402),
        "embed": ("a", None, 0),
    }
    # host b is reached by the gateway: it binds its ports to its address, and the kit uses it
    assert by["chat-2"].api_address == "10.0.0.2"
    assert plan.gateway is not None and plan.gateway.host == "a"
    routes = {r.model: r for r in plan.gateway.routes}
    assert routes["chat"].backends == ("chat-1", "chat-2")
    assert routes["chat"].api_bases == ("http://chat-1:8000/v1", "http://10.0.0.2:9402/v1")
    assert routes["embed"].api_bases == ("http://embed:8000/v1",)


def test_the_gateway_config_lists_both_replicas_with_their_urls():
    plan = plan_of(stack_data())
    config = yaml.safe_load(litellm_config(hosts.host_view(plan, "a")))
    bases = [(d["model_name"], d["litellm_params"]["api_base"]) for d in config["model_list"]]
    assert bases == [
        ("chat", "http://chat-1:8000/v1"),
        ("chat", "http://10.0.0.2:9402/v1"),
        ("embed", "http://embed:8000/v1"),
    ]


def test_compose_files_gateway_on_its_host_engines_bound_to_their_address():
    plan = plan_of(stack_data())
    texts = hosts.compose_texts(plan)
    a, b = (yaml.safe_load(texts[h]) for h in "ab")
    assert set(a["services"]) == {"chat-1", "embed", "gateway"}
    assert set(b["services"]) == {"chat-2"}
    assert a["services"]["gateway"]["ports"][0]["host_ip"] == "127.0.0.1"
    assert [(p["host_ip"], p["published"]) for p in a["services"]["chat-1"]["ports"]] == [
        ("127.0.0.1", "9401")
    ]
    assert "ports" not in a["services"]["embed"]
    assert [(p["host_ip"], p["published"]) for p in b["services"]["chat-2"]["ports"]] == [
        ("10.0.0.2", "9402")
    ]
    assert "http://10.0.0.2:9402/v1" in texts["a"] and "gateway" not in b["services"]
    for text in texts.values():
        assert schema_problems(text) == []
        assert compose_config_problems(text) == []


def test_gateway_host_field_and_an_explicit_bind(tmp_path):
    data = stack_data(host="b")
    data["hosts"]["a"]["bind_address"] = "0.0.0.0"
    data["services"]["embed"]["port"] = 9403
    plan = plan_of(data)
    assert plan.gateway is not None and plan.gateway.host == "b"
    routes = {r.model: r.api_bases for r in plan.gateway.routes}
    assert routes == {
        "chat": ("http://10.0.0.1:9401/v1", "http://chat-2:8000/v1"),
        "embed": ("http://10.0.0.1:9403/v1",),
    }
    assert set(yaml.safe_load(hosts.compose_texts(plan)["b"])["services"]) == {"chat-2", "gateway"}


def test_replicas_numbered_host_by_host_and_a_host_may_repeat():
    data = stack_data({"chat": {"kind": "chat", "model": "org/chat", "replicas": 3,
                                "hosts": ["b", "a", "b"], "gpus": 1, "port": 9410}})  # fmt: skip
    plan = plan_of(data)
    got = [(s.name, s.host, s.gpus, s.port) for s in plan.services]
    assert sorted(got) == [
        ("chat-1", "b", (0,), 9410),
        ("chat-2", "b", (1,), 9411),
        ("chat-3", "a", (0,), 9412),
    ]
    assert plan.gateway is not None
    assert plan.gateway.routes[0].api_bases == (
        "http://10.0.0.2:9410/v1",
        "http://10.0.0.2:9411/v1",
        "http://chat-3:8000/v1",
    )


def test_record_round_trips_the_gateway_over_hosts(tmp_path):
    plan = plan_of(stack_data(), tmp_path)
    record.write(tmp_path / "rec", plan)
    back = record.read(tmp_path / "rec")
    assert back is not None and back.plan == plan


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["services"]["chat"].update(hosts=["a", "b", "a"]),
            "service 'chat', field 'hosts': 3 hosts for replicas: 2; with replicas, list one "
            "host per replica",
        ),
        (
            lambda d: d["services"]["chat"].update(hosts=["a", "c"]),
            "service 'chat', field 'hosts': unknown host c (hosts: a, b)",
        ),
        (
            lambda d: d["services"]["chat"].pop("port"),
            "service 'chat', field 'port': required for its replica on host 'b': the gateway on "
            "host 'a' reaches it at 10.0.0.2:PORT",
        ),
        (
            lambda d: d["hosts"]["b"].pop("address"),
            "host 'b', field 'address': required: the gateway on host 'a' reaches the engines of "
            "host 'b' (chat) at this address",
        ),
        (
            lambda d: d["hosts"]["b"].update(address="127.0.0.1"),
            "host 'b', field 'address': 127.0.0.1 is the gateway container itself",
        ),
        (
            lambda d: d["hosts"]["b"].update(bind_address="10.9.9.9"),
            "host 'b', field 'bind_address': 10.9.9.9 is not its address 10.0.0.2",
        ),
        (
            lambda d: d["gateway"].update(host="z"),
            "field 'gateway.host': unknown host 'z' (hosts: a, b)",
        ),
        (
            lambda d: d["services"]["chat"].update(hosts=["a", "a"], gpus=[0]),
            "service 'chat', field 'gpus': 2 replicas on host 'a' with GPU ids [0] would share "
            "them; give a GPU count per replica",
        ),
        (
            lambda d: d["services"]["chat"].update(multinode={"backend": "native"}),
            "service 'chat', field 'multinode': replicas over hosts each run on one host",
        ),
        (
            lambda d: d.update(observability={"port": 9490}),
            "field 'observability': not supported in a stack with hosts: yet",
        ),
    ],
)
def test_bad_placements_are_refused(change, message):
    data = stack_data()
    change(data)
    problems = problems_of(data)
    assert any(p.startswith(message) for p in problems), problems


def test_gateway_host_needs_hosts():
    data = stack_data()
    del data["hosts"]
    data["host"] = {"gpus": 2, "gpu_memory_gib": 80}
    data["gateway"]["host"] = "a"
    data["services"] = {"x": {"kind": "chat", "model": "org/x", "gpus": 1}}
    assert problems_of(data) == [
        "field 'gateway.host': the stack has one host (host:); the gateway runs there"
    ]


def test_a_model_over_several_hosts_is_not_routed_yet():
    data = stack_data({"big": {"kind": "chat", "model": "org/big", "hosts": ["a", "b"],
                               "gpus": 2, "port": 9420}})  # fmt: skip
    assert any(
        p.startswith("service 'big', field 'hosts': a model over several hosts is not routed")
        for p in problems_of(data)
    )


def test_a_gateway_on_a_remote_host_is_reached_at_its_address():
    from kit.gateway_probe import gateway_endpoint

    data = stack_data(host="b")
    data["hosts"]["b"].update(docker="ssh://kit@10.0.0.2", bind_address="10.0.0.2")
    data["hosts"]["a"]["bind_address"] = "10.0.0.1"
    data["services"]["embed"]["port"] = 9403
    plan = plan_of(data)
    ep = gateway_endpoint(plan)
    assert (ep.host, ep.port) == ("10.0.0.2", 9400)
    local = plan_of(stack_data())
    assert (gateway_endpoint(local).host, gateway_endpoint(local).port) == ("127.0.0.1", 9400)


def test_an_engine_published_for_a_remote_gateway_without_an_api_key_is_warned(tmp_path):
    (warned,) = [w for w in plan_of(stack_data()).warnings if "NO API key" in w]
    assert warned.startswith("chat-2: published on 10.0.0.2:9402 (host 'b') for the gateway")
    assert "set defaults.api_key_env_file" in warned
    key = tmp_path / "kit.env"
    key.write_text("VLLM_API_KEY=sk-test\n")
    data = stack_data()
    data["defaults"]["api_key_env_file"] = str(key)
    assert not [w for w in plan_of(data, tmp_path).warnings if "NO API key" in w]


def test_a_replica_on_an_ipv6_host_is_reached_at_a_bracketed_url():
    data = stack_data()
    data["hosts"]["b"]["address"] = "fd00::2"
    plan = plan_of(data)
    (chat,) = [r for r in plan.gateway.routes if r.model == "chat"]
    assert chat.api_bases == ("http://chat-1:8000/v1", "http://[fd00::2]:9402/v1")
