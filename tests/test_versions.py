"""The version table: one place that decides flags per pinned vLLM version."""

from __future__ import annotations

import pytest

from kit import vllm_versions as vv
from kit.plan import build_plan
from kit.spec import load_stack

V = vv.Version.parse


@pytest.mark.parametrize(
    ("version", "kind", "flags"),
    [
        ("0.8.5", "embed", ("--task", "embed")),
        ("0.8.5", "rerank", ("--task", "score")),
        ("0.10.0", "embed", ("--task", "embed")),
        ("0.10.1", "embed", ("--runner", "pooling", "--convert", "embed")),
        ("0.10.1", "rerank", ("--runner", "pooling", "--convert", "classify")),
        ("0.13.0", "rerank", ("--runner", "pooling", "--convert", "classify")),
        ("0.11.0", "chat", ()),
    ],
)
def test_pooling_flags(version, kind, flags):
    assert vv.pooling_flags(kind, V(version)) == flags


@pytest.mark.parametrize(
    ("version", "flags"),
    [
        ("0.8.5", ("--enable-reasoning", "--reasoning-parser", "deepseek_r1")),
        ("0.9.0", ("--reasoning-parser", "deepseek_r1")),
        ("0.10.0", ("--reasoning-parser", "deepseek_r1")),
    ],
)
def test_reasoning_flags(version, flags):
    assert vv.reasoning_flags("deepseek_r1", V(version)) == flags


@pytest.mark.parametrize(
    ("version", "field"), [("0.15.9", "reasoning_content"), ("0.16.0", "reasoning")]
)
def test_reasoning_field(version, field):
    assert vv.reasoning_field(V(version)) == field


def test_version_parsing_and_order():
    assert V("v0.10.1") == vv.Version(0, 10, 1)
    assert V("0.9") == vv.Version(0, 9, 0)
    assert V("0.10.1rc2") == vv.Version(0, 10, 1)
    assert V("0.9.2") < V("0.10.0") < V("0.10.1")
    with pytest.raises(ValueError, match="not a vLLM version"):
        V("latest")


def test_translate_task_and_enable_reasoning():
    t = vv.translate_legacy(("--task", "embed", "--max-num-seqs", "8"), "embed", V("0.11.0"))
    assert t.args == ("--max-num-seqs", "8")
    assert "translated to '--runner pooling --convert embed' for vLLM 0.11.0" in t.notes[0]
    t = vv.translate_legacy(("--task=score",), "rerank", V("0.8.5"))
    assert t.args == () and "'--task score'" in t.notes[0]
    t = vv.translate_legacy(("--enable-reasoning",), "chat", V("0.10.0"))
    assert t.args == () and "removed in 0.10" in t.notes[0]
    t = vv.translate_legacy(("--task",), "embed", V("0.11.0"))
    assert t.errors == ("extra_args: --task needs a value",)


def test_each_version_renders_its_own_flags(stack_file):
    """The same stack renders --task on 0.8.5 and --runner/--convert on 0.11.0."""
    services = {
        "llm": {
            "kind": "chat",
            "model": "m",
            "gpus": [0],
            "port": 1,
            "reasoning_parser": "deepseek_r1",
        },
        "emb": {
            "kind": "embed",
            "model": "e",
            "gpus": [1],
            "port": 2,
            "extra_args": ["--task", "embed"],
        },
    }
    old = build_plan(
        load_stack(
            stack_file({"defaults": {"vllm_version": "0.8.5"}}, services=services, name="old")
        )
    )
    new = build_plan(
        load_stack(
            stack_file({"defaults": {"vllm_version": "0.11.0"}}, services=services, name="new")
        )
    )
    assert old.service("emb").engine_args[-2:] == ("--task", "embed")
    assert "--enable-reasoning" in old.service("llm").engine_args
    assert new.service("emb").engine_args[-4:] == ("--runner", "pooling", "--convert", "embed")
    assert "--enable-reasoning" not in new.service("llm").engine_args
    assert old.service("llm").reasoning_field == "reasoning_content"


def test_parser_tables_only_grow():
    for table in (vv.REASONING_PARSERS, vv.TOOL_PARSERS):
        assert vv.parsers_in(table, vv.OLDEST) == sorted(
            n for n, s in table.items() if s <= vv.OLDEST
        )
        assert set(vv.parsers_in(table, vv.OLDEST)) <= set(vv.parsers_in(table, vv.NEWEST))
