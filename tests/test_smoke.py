"""kit smoke against engine doubles on the host (real HTTP, no Docker)."""

from __future__ import annotations

import pytest
import yaml

from doubleutil import Double, double_env, write_model
from kit.plan import build_plan
from kit.smoke import smoke
from kit.spec import load_stack


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke")
    chat = Double(write_model(tmp, "chat"), "--served-model-name", "c", "--reasoning-parser", "qwen3",
                  env=double_env(KIT_DOUBLE_VLLM_VERSION="0.16.0"))  # fmt: skip
    emb = Double(write_model(tmp, "emb", architectures=["BertModel"]), "--served-model-name", "e",
                 "--runner", "pooling", "--convert", "embed")  # fmt: skip
    rr = Double(write_model(tmp, "rr", architectures=["XLMRobertaModel"]), "--served-model-name", "r",
                "--runner", "pooling", "--convert", "classify")  # fmt: skip
    try:
        for d in (chat, emb, rr):
            d.wait_ready()
        yield {"chat": chat.port, "emb": emb.port, "rr": rr.port}
    finally:
        for d in (chat, emb, rr):
            d.stop()


def stack(tmp_path, ports, version="0.16.0", **kinds):
    services = {
        name: {"kind": kind, "model": name, "model_source": "hub", "served_name": served,
               "gpus": [i], "port": ports[port], **({"reasoning_parser": "qwen3"} if kind == "chat" else {})}
        for i, (name, (kind, served, port)) in enumerate(kinds.items())
    }  # fmt: skip
    data = {"host": {"gpus": 8, "gpu_memory_gib": 80},
            "defaults": {"image": "x/y:1", "vllm_version": version}, "services": services}  # fmt: skip
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return build_plan(load_stack(path))


def test_every_kind_passes(servers, tmp_path):
    plan = stack(tmp_path, servers, chat=("chat", "c", "chat"), emb=("embed", "e", "emb"),
                 rr=("rerank", "r", "rr"))  # fmt: skip
    checks = smoke(plan, max_tokens=8)
    assert [c.name for c in checks if c.service == "chat"] == [
        "health",
        "models",
        "chat",
        "chat stream",
    ]
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    by = {(c.service, c.name): c.detail for c in checks}
    assert (
        "reasoning in 'reasoning'" in by[("chat", "chat")]
    )  # vLLM 0.16 names the field 'reasoning'
    assert by[("emb", "embeddings")].startswith("3 x ")
    assert by[("rr", "rerank")] == "5 ranked, best: 'A man is eating food.'"


def test_failures_are_reported_not_raised(servers, tmp_path):
    # a rerank service that is really a chat model, and an embed service nobody serves
    plan = stack(
        tmp_path, {**servers, "none": 1}, rr=("rerank", "c", "chat"), emb=("embed", "e", "none")
    )
    checks = {(c.service, c.name): c for c in smoke(plan)}
    assert not checks[("rr", "rerank")].ok
    assert (
        not checks[("emb", "health")].ok and "is the stack up?" in checks[("emb", "health")].detail
    )
    assert checks[("rr", "models")].ok  # the chat double lists 'c'


def test_http_200_error_bodies_fail_with_the_servers_message(servers, tmp_path):
    """Chat sent to a pooling model: vLLM 0.11 answers HTTP 200 with an error body
    (vllm-project/vllm#21704), plain and streamed; smoke says so instead of 'expected 1 choice'."""
    plan = stack(tmp_path, servers, chat=("chat", "e", "emb"))
    checks = {c.name: c for c in smoke(plan, max_tokens=4)}
    want = "HTTP 200 with an error body (code 400): The model does not support Chat Completions API"
    assert not checks["chat"].ok and checks["chat"].detail == want
    assert not checks["chat stream"].ok and checks["chat stream"].detail == want


def test_reasoning_field_must_be_the_pinned_versions(servers, tmp_path):
    """The chat double imitates vLLM 0.16 ('reasoning'); a stack pinning 0.11.0 expects
    'reasoning_content', the field clients of 0.11 read."""
    plan = stack(tmp_path, servers, "0.11.0", chat=("chat", "c", "chat"))
    checks = {c.name: c for c in smoke(plan, max_tokens=8)}
    for name in ("chat", "chat stream"):
        assert not checks[name].ok
        assert checks[name].detail.startswith(
            "reasoning in 'reasoning', but vLLM 0.11.0 sends it in 'reasoning_content'"
        )
