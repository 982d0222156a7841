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
    ("version", "fields"),
    [
        ("0.11.0", ("reasoning_content",)),
        ("0.11.1", ("reasoning", "reasoning_content")),
        ("0.15.1", ("reasoning", "reasoning_content")),
        ("0.16.0", ("reasoning",)),
    ],
)
def test_reasoning_field(version, fields):
    assert vv.reasoning_fields(V(version)) == fields
    assert vv.reasoning_field(V(version)) == fields[0]


def test_droppable_removed_flag_is_dropped_with_note():
    t = vv.translate_legacy(("--disable-log-requests", "--max-num-seqs", "8"), "chat", V("0.17.0"))
    assert t.args == ("--max-num-seqs", "8") and "removed in vLLM 0.17.0" in t.notes[0]
    t = vv.translate_legacy(("--disable-log-requests",), "chat", V("0.16.0"))
    assert t.args == ("--disable-log-requests",) and not t.notes


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
    assert t.errors == ("--task needs a value",)


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
            stack_file(
                {"defaults": {"image": "vllm/vllm-openai:v0.8.5", "vllm_version": "0.8.5"}},
                services=services,
                name="old",
            )
        )
    )
    new = build_plan(
        load_stack(
            stack_file(
                {"defaults": {"image": "vllm/vllm-openai:v0.11.0", "vllm_version": "0.11.0"}},
                services=services,
                name="new",
            )
        )
    )
    assert old.service("emb").engine_args[-2:] == ("--task", "embed")
    assert "--enable-reasoning" in old.service("llm").engine_args
    assert new.service("emb").engine_args[-4:] == ("--runner", "pooling", "--convert", "embed")
    assert "--enable-reasoning" not in new.service("llm").engine_args
    assert old.service("llm").reasoning_field == "reasoning_content"
    assert new.service("llm").reasoning_field == "reasoning_content"


def test_parser_tables_match_released_lists():
    """Spot checks against the lists read from released vLLM (docs/vllm-versions.md)."""
    assert vv.parsers_in(vv.REASONING_PARSERS, V("0.8.5")) == ["deepseek_r1", "granite"]
    assert vv.parsers_in(vv.REASONING_PARSERS, V("0.11.0")) == [
        "deepseek_r1", "glm45", "granite", "hunyuan_a13b", "mistral", "openai_gptoss", "qwen3",
        "seed_oss", "step3",
    ]  # fmt: skip
    assert len(vv.parsers_in(vv.REASONING_PARSERS, V("0.33.0"))) == 42
    assert len(vv.parsers_in(vv.TOOL_PARSERS, V("0.33.0"))) == 58
    assert "minimax" in vv.parsers_in(vv.TOOL_PARSERS, V("0.23.0"))
    assert "minimax" not in vv.parsers_in(vv.TOOL_PARSERS, V("0.24.0"))


def test_flag_not_yet_added():
    t = vv.translate_legacy(("--cuda-graph-sizes", "8"), "chat", V("0.8.5"))
    assert t.errors == ("--cuda-graph-sizes does not exist before vLLM 0.9.0",)
    assert vv.translate_legacy(("--cuda-graph-sizes", "8"), "chat", V("0.9.0")).errors == ()
