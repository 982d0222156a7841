"""``kit batch`` against a running simulated stack: real Docker, compose, published ports and
the engine double in containers (only the image of the rendered compose file changes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from kit import lifecycle
from kit.batch import errors_path_for
from kit.cli import KitGroup
from kit.cli_batch import batch_command
from kit.engine import Project
from kit.plan import build_plan
from kit.render import RenderOptions
from kit.spec import load_stack


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_by_id(path: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    ids = [r["custom_id"] for r in rows]
    assert len(ids) == len(set(ids)), "a custom_id appears twice"
    return {r["custom_id"]: r for r in rows}


def run_batch_cli(*args: str):
    group = KitGroup("kit", commands=[batch_command])
    return CliRunner().invoke(group, ["batch", *args])


def test_batch_against_a_running_simulated_stack(sim_stack, docker_engine, tmp_path):
    fast = {"KIT_DOUBLE_LOAD_SECONDS": "1"}
    path = sim_stack(env={"llm": fast, "embed": fast, "rerank": fast})
    plan = build_plan(load_stack(path))
    project = Project(plan, options=RenderOptions(image=docker_engine))
    lifecycle.up(plan, project)
    try:
        stack = str(path)

        # chat: every line answered by the served model; an embeddings line is refused
        chat = [
            {"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "gpt-4o-mini", "max_tokens": 8,
                      "messages": [{"role": "user", "content": f"question {i}"}]}}
            for i in range(24)
        ]  # fmt: skip
        chat.append(
            {
                "custom_id": "wrong",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"input": "x"},
            }
        )
        out = tmp_path / "chat.out.jsonl"
        inp = write_jsonl(tmp_path / "chat.jsonl", chat)
        res = run_batch_cli(stack, "llm", str(inp), "-o", str(out), "--allow-failures")
        assert res.exit_code == 0, res.output
        assert "done 24, failed 0, skipped 0 (already done), invalid 1" in res.stdout
        assert "body.model set to 'sim-qwen3-8b'" in res.stderr
        got = read_by_id(out)
        assert set(got) == {f"c{i}" for i in range(24)}
        for line in got.values():
            assert line["error"] is None and line["response"]["status_code"] == 200
            assert line["response"]["body"]["model"] == "sim-qwen3-8b"
            assert line["response"]["body"]["choices"][0]["message"]["content"]
        (bad,) = [json.loads(x) for x in errors_path_for(out).read_text().splitlines()]
        assert bad["custom_id"] == "wrong" and bad["error"]["line"] == 25
        assert "is an embed request, but service 'llm' is a chat service" in bad["error"]["message"]

        # embeddings, then the same command again: all skipped, nothing resent
        emb = [
            {"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
             "body": {"input": f"passage number {i}"}}
            for i in range(40)
        ]  # fmt: skip
        inp = write_jsonl(tmp_path / "emb.jsonl", emb)
        out = tmp_path / "emb.out.jsonl"
        res = run_batch_cli(stack, "embed", str(inp), "-o", str(out), "--concurrency", "8")
        assert res.exit_code == 0, res.output
        first = read_by_id(out)
        assert len(first) == 40
        assert all(r["response"]["body"]["model"] == "sim-embed" for r in first.values())
        res = run_batch_cli(stack, "embed", str(inp), "-o", str(out))
        assert res.exit_code == 0 and "done 0, failed 0, skipped 40 (already done)" in res.stdout
        assert read_by_id(out) == first

        # rerank and score bodies on the reranker
        docs = ["a man is eating food", "a woman plays violin"]
        rr = [
            {"custom_id": "rerank", "method": "POST", "url": "/v1/rerank",
             "body": {"query": "a man eats", "documents": docs}},
            {"custom_id": "score", "method": "POST", "url": "/v1/score",
             "body": {"text_1": "a man eats", "text_2": docs}},
        ]  # fmt: skip
        inp = write_jsonl(tmp_path / "rr.jsonl", rr)
        out = tmp_path / "rr.out.jsonl"
        res = run_batch_cli(stack, "rerank", str(inp), "-o", str(out))
        assert res.exit_code == 0, res.output
        got = read_by_id(out)
        assert got["rerank"]["response"]["body"]["results"][0]["index"] == 0
        assert len(got["score"]["response"]["body"]["data"]) == 2
    finally:
        lifecycle.down(project)
