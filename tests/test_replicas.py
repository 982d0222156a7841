"""Replicas: ``replicas: N`` becomes N containers on disjoint GPU sets behind one model name."""

from __future__ import annotations

import pytest
import yaml

from kit.errors import StackError
from kit.plan import build_plan
from kit.record import from_record, to_record
from kit.render import render_compose
from kit.spec import parse_stack
from stackutil import BASE_STACK, deep_merge

GW = {"gateway": {"port": 19390}}


def plan_of(services: dict, *, patch: dict | None = None):
    data = deep_merge(BASE_STACK, patch or {})
    data["services"] = services
    return build_plan(parse_stack(yaml.safe_dump(data), source="t.yaml", default_name="t.yaml"))


def problems_of(services: dict, *, patch: dict | None = None) -> str:
    with pytest.raises(StackError) as exc:
        plan_of(services, patch=patch)
    return str(exc.value)


def test_count_per_replica_is_placed_on_disjoint_gpus():
    plan = plan_of({"llm": {"kind": "chat", "model": "org/llm", "gpus": 2, "replicas": 3}},
                   patch=GW)  # fmt: skip
    reps = [s for s in plan.services if s.replica_of == "llm"]
    assert [s.name for s in reps] == ["llm-1", "llm-2", "llm-3"]
    assert [s.gpus for s in reps] == [(0, 1), (2, 3), (4, 5)]
    assert {s.served_name for s in reps} == {"llm"}
    assert all(s.tp == 2 and not s.published for s in reps)
    # one route, three backends
    (route,) = plan.gateway.routes
    assert route.model == "llm" and route.backends == ("llm-1", "llm-2", "llm-3")


def test_explicit_ids_split_in_order_and_ports_count_up():
    plan = plan_of({"llm": {"kind": "chat", "model": "org/llm", "gpus": [6, 7, 2, 3],
                            "replicas": 2, "port": 9100}}, patch=GW)  # fmt: skip
    assert [(s.name, s.gpus, s.port, s.published) for s in plan.services] == [
        ("llm-1", (6, 7), 9100, True),
        ("llm-2", (2, 3), 9101, True),
    ]


def test_ids_that_do_not_split_are_refused():
    msg = problems_of({"llm": {"kind": "chat", "model": "org/llm", "gpus": [0, 1, 2],
                               "replicas": 2}}, patch=GW)  # fmt: skip
    assert "3 GPU ids do not split into 2 replicas" in msg


def test_replicas_that_would_share_a_gpu_are_refused():
    msg = problems_of({"llm": {"kind": "chat", "model": "org/llm", "gpus": 4, "replicas": 3}},
                      patch=GW)  # fmt: skip
    assert "replicas need disjoint GPUs" in msg


def test_replica_name_taken_by_another_service():
    msg = problems_of({
        "llm": {"kind": "chat", "model": "org/llm", "gpus": 1, "replicas": 2},
        "llm-2": {"kind": "embed", "model": "org/e", "gpus": [7]},
    }, patch=GW)  # fmt: skip
    assert "replica 2 is named 'llm-2'" in msg


def test_without_a_gateway_every_service_needs_a_port():
    msg = problems_of({"llm": {"kind": "chat", "model": "org/llm", "gpus": 1}})
    assert "field 'port': required" in msg and "gateway:" in msg


def test_plan_service_finds_a_replica_group_by_its_stack_name():
    plan = plan_of({"llm": {"kind": "chat", "model": "org/llm", "gpus": 1, "replicas": 2}},
                   patch=GW)  # fmt: skip
    assert plan.service("llm").name == "llm-1"
    assert plan.service("llm-2").gpus == (1,)


def test_compose_has_one_service_per_replica_with_its_gpus_and_no_port():
    plan = plan_of({"llm": {"kind": "chat", "model": "org/llm", "gpus": 2, "replicas": 2}},
                   patch=GW)  # fmt: skip
    compose = yaml.safe_load(render_compose(plan))
    for name, ids in (("llm-1", ["0", "1"]), ("llm-2", ["2", "3"])):
        svc = compose["services"][name]
        assert svc["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == ids
        assert "ports" not in svc
        assert svc["labels"]["kit.replica-of"] == "llm"


def test_record_round_trip_keeps_replicas_and_gateway(tmp_path):
    plan = plan_of({"llm": {"kind": "chat", "model": "org/llm", "gpus": 1, "replicas": 2}},
                   patch={**GW, "observability": True})  # fmt: skip
    back = from_record(to_record(plan), tmp_path).plan
    assert back == plan
    assert back.gateway.routes[0].backends == ("llm-1", "llm-2")
    assert [t.host for t in back.observability.targets] == ["llm-1", "llm-2", "gateway"]


def test_data_parallel_is_one_container_with_dp_x_tp_gpus():
    plan = plan_of({"llm": {"kind": "chat", "model": "org/llm", "gpus": [0, 1, 2, 3],
                            "data_parallel_size": 2, "port": 9001}})  # fmt: skip
    (s,) = plan.services
    assert (s.name, s.gpus, s.tp, s.dp) == ("llm", (0, 1, 2, 3), 2, 2)
    args = list(s.engine_args)
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--data-parallel-size") + 1] == "2"
    assert any("data parallel: 2 engines in ONE container" in n for n in plan.notes)


def test_plan_says_which_a_service_uses():
    plan = plan_of({"llm": {"kind": "chat", "model": "org/llm", "gpus": 1, "replicas": 2}},
                   patch=GW)  # fmt: skip
    assert any(n.startswith("llm-1: replicas: 2 containers on disjoint GPUs") for n in plan.notes)


def test_data_parallel_gpus_must_split():
    msg = problems_of({"llm": {"kind": "chat", "model": "org/llm", "gpus": [0, 1, 2],
                               "data_parallel_size": 2, "port": 9001}})  # fmt: skip
    assert "3 GPUs do not split into 2 data-parallel ranks" in msg


def test_data_parallel_flag_is_owned_by_the_kit():
    msg = problems_of({"llm": {"kind": "chat", "model": "org/llm", "gpus": [0, 1], "port": 9001,
                               "extra_args": ["--data-parallel-size", "2"]}})  # fmt: skip
    assert "use the 'data_parallel_size' field" in msg
