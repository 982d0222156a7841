"""The kind registry is the one place a kind is described: every module reads it, so a kind
registered there (a fake one here) is validated, planned, rendered, smoke-tested, benchmarked
and batched with no other change."""

from __future__ import annotations

import pytest
import yaml

from kit import kinds, smoke, wire, workload
from kit.batch.input import parse_line
from kit.errors import StackError
from kit.plan import build_plan
from kit.render import render_compose
from kit.spec import parse_stack
from kit.vllm_versions import Version
from kit.vllm_versions import pooling_flags as version_flags
from stackutil import BASE_STACK, deep_merge

#: a scoring-only service: vLLM's classify pooling, answered on /v1/score, checked by health
#: and models only. Registered by the test, nowhere else.
SCORE = kinds.Kind(
    name="score",
    summary="scores only: /v1/score",
    generates=False,
    pooling="classify",
    bench_apis=("rerank",),
    batch_urls=("/v1/score",),
    smoke_checks=("health", "models"),
    startup_base_s=100,
    startup_unknown_s=200,
    runtime_gib=0.5,
    fill_reserve_gib=2.0,
    fill_runtime_gib=0.5,
    task_values=(),
)


@pytest.fixture
def score_kind(monkeypatch):
    monkeypatch.setitem(kinds.KINDS, "score", SCORE)
    return SCORE


def score_stack(extra_args=()):
    doc = deep_merge(
        BASE_STACK,
        {"services": {"s": {"kind": "score", "model": "org/s", "gpus": [4], "port": 9300,
                            "extra_args": list(extra_args)}}},
    )  # fmt: skip
    return parse_stack(yaml.safe_dump(doc), source="score.yaml", default_name="score.yaml")


def test_an_unregistered_kind_is_refused_with_the_known_ones():
    with pytest.raises(StackError) as info:
        score_stack()
    assert "kind 'score' is not one the kit knows; use one of 'chat', 'embed', 'rerank'" in str(
        info.value
    )


def test_a_registered_kind_flows_through_plan_render_smoke_bench_and_batch(score_kind):
    plan = build_plan(score_stack(), inspect_models=False)
    s = plan.service("s")
    assert s.startup_timeout == SCORE.startup_unknown_s
    assert s.engine_args[-4:] == ("--runner", "pooling", "--convert", "classify")
    assert "--convert" in render_compose(plan)
    assert [name for name, _ in smoke.checks_for(s)] == ["health", "models"]
    assert workload.apis_for("score") == ("rerank",)
    ok = parse_line(b'{"custom_id": "a", "method": "POST", "url": "/v1/score", "body": {}}', 1, s)
    assert ok is not None and getattr(ok, "url", None) == "/v1/score"
    bad = parse_line(b'{"custom_id": "b", "method": "POST", "url": "/v1/rerank", "body": {}}', 2, s)
    assert "rerank request" in bad.message  # type: ignore[union-attr]


def test_a_registered_kind_owns_nothing_that_is_not_its_own(score_kind):
    with pytest.raises(StackError) as info:
        build_plan(score_stack(["--reasoning-parser", "deepseek_r1"]), inspect_models=False)
    assert "only chat services take it" in str(info.value)


@pytest.mark.parametrize("kind", list(kinds.KINDS.values()), ids=lambda k: k.name)
def test_every_kind_is_complete(kind):
    assert kind.smoke_checks and all(c in smoke.CHECKS for c in kind.smoke_checks)
    assert kind.bench_apis and all(a in wire.API_PATHS for a in kind.bench_apis)
    assert kind.batch_urls
    assert kinds.kind_of_batch_url(kind.batch_urls[0]) == kind.name
    for task in kind.task_values:
        assert kinds.kind_of_task(task) == kind.name
    if kind.pooling is None:
        assert version_flags(kind.name, Version.parse("0.11.0")) == ()
    else:
        assert kind.fill_reserve_gib is not None and kind.fill_runtime_gib is not None
        assert version_flags(kind.name, Version.parse("0.8.5"))[0] == "--task"


def test_unknown_kind_lookup_names_the_known_ones():
    with pytest.raises(KeyError, match="known: chat, embed, rerank"):
        kinds.kind("gateway")
