"""The engine double (the engine_double/vllm_double package) as a host subprocess over real HTTP.

No Docker and no GPU: each test starts `python engine_double/vllm_double serve ...` on a free
127.0.0.1 port with a tiny load delay, talks to it with http.client, and always stops the process.
"""

from __future__ import annotations

import base64
import json
import math
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from doubleutil import DOUBLE, ROOT, Double, double_env, free_port, launch, port_open, write_model

FIXTURES = ROOT / "tests" / "fixtures" / "vllm_logs"


@pytest.fixture
def started() -> Iterator[list[Double]]:
    """Collects doubles started by a test and stops them all afterwards."""
    doubles: list[Double] = []
    yield doubles
    for d in doubles:
        d.stop()


@pytest.fixture(scope="module")
def gen(tmp_path_factory) -> Iterator[Double]:
    model = write_model(tmp_path_factory.mktemp("gen"), max_position_embeddings=4096)
    d = Double(model, "--served-model-name", "qwen3-8b", "alias-b", "--max-model-len", "2048")
    try:
        yield d.wait_ready()
    finally:
        d.stop()


@pytest.fixture(scope="module")
def embed(tmp_path_factory) -> Iterator[Double]:
    model = write_model(tmp_path_factory.mktemp("emb"), architectures=["BertModel"], hidden_size=48)
    d = Double(model, "--served-model-name", "emb", "--runner", "pooling", "--convert", "embed")
    try:
        yield d.wait_ready()
    finally:
        d.stop()


@pytest.fixture(scope="module")
def rerank(tmp_path_factory) -> Iterator[Double]:
    model = write_model(tmp_path_factory.mktemp("rr"), architectures=["XLMRobertaModel"])
    d = Double(model, "--served-model-name", "rr", "--task", "score")
    try:
        yield d.wait_ready()
    finally:
        d.stop()


# ---------------------------------------------------------------------------------------------
# lifecycle
# ---------------------------------------------------------------------------------------------


def test_port_closed_while_loading_then_open(started, tmp_path):
    env = double_env(KIT_DOUBLE_LOAD_SECONDS="1.0")
    d = launch(started, write_model(tmp_path), env=env, ready=False)
    t0 = time.monotonic()
    time.sleep(0.3)
    assert d.proc.poll() is None
    assert not port_open(d.port), "port must stay closed while loading"
    d.wait_ready()
    assert time.monotonic() - t0 >= 0.8
    status, _, body = d.get("/health")
    assert (status, body) == (200, b"")
    code, out, _ = d.stop()
    assert code == 0
    for line in (
        "vLLM API server version 0.11.0",
        "non-default args:",
        "Starting to load model",
        "Loading weights took",
        "Starting vLLM API server 0 on http://127.0.0.1:",
        "Application startup complete.",
        "INFO:     Shutting down",
    ):
        assert line in out


def test_sigterm_exits_promptly_while_loading_and_when_ready(started, tmp_path):
    model = write_model(tmp_path)
    loading = launch(started, model, env=double_env(KIT_DOUBLE_LOAD_SECONDS="30"), ready=False)
    ready = launch(started, model)
    assert "Automatically detected platform" in loading.proc.stdout.readline()
    for d in (loading, ready):
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=3) == 0
        assert time.monotonic() - t0 < 1.0


def test_version_flag_and_version_route(gen):
    out = subprocess.run(
        [sys.executable, str(DOUBLE), "--version"],
        env=double_env(KIT_DOUBLE_VLLM_VERSION="0.10.1.1"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "0.10.1.1"
    status, _, body = gen.get("/version")
    assert status == 200 and json.loads(body) == {"version": "0.11.0"}


# ---------------------------------------------------------------------------------------------
# generation API
# ---------------------------------------------------------------------------------------------


def test_models_lists_every_served_name(gen):
    status, _, body = gen.get("/v1/models")
    assert status == 200
    doc = json.loads(body)
    assert doc["object"] == "list"
    assert [m["id"] for m in doc["data"]] == ["qwen3-8b", "alias-b"]
    for m in doc["data"]:
        assert m["object"] == "model" and m["owned_by"] == "vllm"
        assert m["root"].endswith("/model") and m["parent"] is None
        assert m["max_model_len"] == 2048
        assert m["permission"][0]["object"] == "model_permission"


def test_chat_plain(gen):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    status, doc = gen.post_json(
        "/v1/chat/completions", {"model": "alias-b", "messages": msgs, "max_tokens": 7}
    )
    assert status == 200
    assert doc["object"] == "chat.completion" and doc["id"].startswith("chatcmpl-")
    choice = doc["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert len(choice["message"]["content"].split()) == 7
    assert choice["finish_reason"] == "length"
    assert doc["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": 7,
        "total_tokens": 11,
        "prompt_tokens_details": None,
    }
    # deterministic
    _, again = gen.post_json("/v1/chat/completions", {"messages": msgs, "max_tokens": 7})
    assert again["choices"][0]["message"]["content"] == choice["message"]["content"]
    # default max_tokens is 16
    _, doc16 = gen.post_json("/v1/chat/completions", {"messages": msgs})
    assert doc16["usage"]["completion_tokens"] == 16


def test_chat_stream_with_usage(gen):
    body = {
        "messages": [{"role": "user", "content": "one two three"}],
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = gen.stream("/v1/chat/completions", body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    usage = chunks[-1]
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    token_chunks = chunks[1:-1]
    assert len(token_chunks) == 5
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in token_chunks)
    assert len(text.split()) == 5
    assert token_chunks[-1]["choices"][0]["finish_reason"] == "length"
    # without include_usage: no usage chunk
    body.pop("stream_options")
    events = gen.stream("/v1/chat/completions", body)
    assert all("usage" not in json.loads(e) for e in events[:-1])


def test_stop_string_finishes_with_stop(gen):
    _, doc = gen.post_json(
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 12},
    )
    words = doc["choices"][0]["message"]["content"].split()
    _, stopped = gen.post_json(
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 12, "stop": [words[3]]},
    )
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert stopped["choices"][0]["message"]["content"].split() == words[:3]


def test_completions_plain_and_stream(gen):
    status, doc = gen.post_json("/v1/completions", {"prompt": "a b c d", "max_tokens": 4})
    assert status == 200 and doc["object"] == "text_completion"
    assert len(doc["choices"][0]["text"].split()) == 4
    assert doc["usage"]["prompt_tokens"] == 4 and doc["usage"]["completion_tokens"] == 4
    events = gen.stream(
        "/v1/completions",
        {
            "prompt": "a b c d",
            "max_tokens": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == " ".join(
        gen.post_json("/v1/completions", {"prompt": "a b c d", "max_tokens": 3})[1]["choices"][0][
            "text"
        ].split()
    )
    assert chunks[-1]["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize(
    ("version", "field"), [("0.15.1", "reasoning_content"), ("0.16.0", "reasoning")]
)
def test_reasoning_field_name_by_version(started, tmp_path, version, field):
    env = double_env(KIT_DOUBLE_VLLM_VERSION=version)
    d = launch(started, write_model(tmp_path), "--reasoning-parser", "qwen3", env=env)
    msgs = [{"role": "user", "content": "think"}]
    _, doc = d.post_json("/v1/chat/completions", {"messages": msgs, "max_tokens": 8})
    message = doc["choices"][0]["message"]
    other = {"reasoning", "reasoning_content"} - {field}
    assert message[field] and not (other & message.keys())
    assert doc["usage"]["completion_tokens"] == 8
    events = d.stream("/v1/chat/completions", {"messages": msgs, "max_tokens": 8, "stream": True})
    deltas = [json.loads(e)["choices"][0]["delta"] for e in events[:-1]]
    assert any(field in delta for delta in deltas)
    assert not any(other & delta.keys() for delta in deltas)
    # Qwen3's enable_thinking=false switch turns reasoning off
    kw = {"chat_template_kwargs": {"enable_thinking": False}}
    _, plain = d.post_json("/v1/chat/completions", {"messages": msgs, "max_tokens": 8, **kw})
    assert plain["choices"][0]["message"][field] is None


def test_context_length_checked(gen):
    status, doc = gen.post_json(
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000},
    )
    assert status == 400
    assert "maximum context length is 2048 tokens" in doc["error"]["message"]


# ---------------------------------------------------------------------------------------------
# pooling APIs
# ---------------------------------------------------------------------------------------------


def test_embeddings(embed):
    texts = ["first text", "second text here", "first text"]
    status, doc = embed.post_json("/v1/embeddings", {"model": "emb", "input": texts})
    assert status == 200 and doc["object"] == "list" and doc["model"] == "emb"
    assert [e["index"] for e in doc["data"]] == [0, 1, 2]
    vecs = [e["embedding"] for e in doc["data"]]
    assert all(e["object"] == "embedding" for e in doc["data"])
    assert all(len(v) == 48 for v in vecs)  # config.json hidden_size
    for v in vecs:
        assert all(math.isfinite(x) for x in v)
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-6)
    assert vecs[0] == vecs[2] and vecs[0] != vecs[1]
    assert doc["usage"]["prompt_tokens"] == 7 and doc["usage"]["total_tokens"] == 7
    _, single = embed.post_json("/v1/embeddings", {"input": "first text"})
    assert len(single["data"]) == 1 and single["data"][0]["embedding"] == vecs[0]
    _, b64 = embed.post_json("/v1/embeddings", {"input": "first text", "encoding_format": "base64"})
    raw = base64.b64decode(b64["data"][0]["embedding"])
    assert struct.unpack("<48f", raw) == pytest.approx(vecs[0], abs=1e-6)


def test_embed_dim_env_override(started, tmp_path):
    model = write_model(tmp_path, architectures=["BertModel"])
    env = double_env(KIT_DOUBLE_EMBED_DIM="16", KIT_DOUBLE_VLLM_VERSION="0.9.2")
    d = launch(started, model, "--task", "embed", env=env)
    _, doc = d.post_json("/v1/embeddings", {"input": ["a"]})
    assert len(doc["data"][0]["embedding"]) == 16


SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
]


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank", "/v2/rerank"])
def test_rerank(rerank, path):
    body = {"model": "rr", "query": "A man is eating pasta.", "documents": SENTENCES}
    status, doc = rerank.post_json(path, body)
    assert status == 200 and doc["model"] == "rr" and doc["id"].startswith("rerank-")
    results = doc["results"]
    assert sorted(r["index"] for r in results) == list(range(5))
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert results[0]["document"]["text"] == "A man is eating food."
    assert results[1]["document"]["text"] == "A man is eating a piece of bread."
    assert all(results[i]["document"]["text"] == SENTENCES[results[i]["index"]] for i in range(5))
    assert doc["usage"]["total_tokens"] > 0
    _, top = rerank.post_json(path, {**body, "top_n": 2})
    assert [r["index"] for r in top["results"]] == [r["index"] for r in results[:2]]
    _, zero = rerank.post_json(path, {**body, "top_n": 0})
    assert len(zero["results"]) == 5


def test_score(rerank):
    status, doc = rerank.post_json(
        "/score", {"model": "rr", "text_1": "A man is eating pasta.", "text_2": SENTENCES}
    )
    assert status == 200 and doc["object"] == "list"
    assert [d["index"] for d in doc["data"]] == list(range(5))
    assert all(d["object"] == "score" for d in doc["data"])
    scores = [d["score"] for d in doc["data"]]
    assert max(range(5), key=scores.__getitem__) == 0
    assert doc["usage"]["prompt_tokens"] > 0
    _, one = rerank.post_json("/v1/score", {"text_1": "a b", "text_2": "a b"})
    assert one["data"][0]["score"] == pytest.approx(1.0)


def test_route_not_supported_by_runner(gen, embed, rerank):
    # vLLM returns the error model with HTTP 200 here (vllm-project/vllm#21704)
    status, doc = embed.post_json("/v1/chat/completions", {"messages": []})
    assert status == 200
    assert doc["error"]["message"] == "The model does not support Chat Completions API"
    status, doc = gen.post_json("/v1/embeddings", {"input": "x"})
    assert doc["error"]["message"] == "The model does not support Embeddings API"
    status, doc = gen.post_json("/rerank", {"query": "q", "documents": ["d"]})
    assert doc["error"]["message"] == "The model does not support Rerank (Score) API"
    status, doc = rerank.post_json("/v1/embeddings", {"input": "x"})
    assert doc["error"]["code"] == 400


# ---------------------------------------------------------------------------------------------
# errors, auth, metrics
# ---------------------------------------------------------------------------------------------


def test_unknown_model_unknown_path_bad_json(gen):
    status, doc = gen.post_json("/v1/chat/completions", {"model": "nope", "messages": []})
    assert status == 404
    assert doc == {
        "error": {
            "message": "The model `nope` does not exist.",
            "type": "NotFoundError",
            "param": None,
            "code": 404,
        }
    }
    status, _, body = gen.get("/v1/nothing-here")
    assert status == 404 and json.loads(body) == {"detail": "Not Found"}
    status, _, body = gen.get("/v1/chat/completions")
    assert status == 405
    status, _, body = gen.post("/v1/chat/completions", None, raw=b"{not json")
    assert status == 400 and json.loads(body)["error"]["type"] == "BadRequestError"
    status, doc = gen.post_json("/v1/chat/completions", {"model": "qwen3-8b"})
    assert status == 400 and "messages" in doc["error"]["message"]


def test_flat_error_shape_before_0_10_1(started, tmp_path):
    env = double_env(KIT_DOUBLE_VLLM_VERSION="0.10.0")
    d = launch(started, write_model(tmp_path), env=env)
    status, doc = d.post_json("/v1/chat/completions", {"model": "x", "messages": []})
    assert status == 404
    assert doc == {
        "object": "error",
        "message": "The model `x` does not exist.",
        "type": "NotFoundError",
        "param": None,
        "code": 404,
    }


def test_api_key(started, tmp_path):
    d = launch(started, write_model(tmp_path), "--api-key", "s3cret")
    assert d.get("/v1/models")[0] == 401
    assert json.loads(d.get("/v1/models")[2]) == {"error": "Unauthorized"}
    bad = {"authorization": "Bearer wrong"}
    assert d.get("/v1/models", headers=bad)[0] == 401
    assert d.get("/v1/models", headers={"authorization": "Bearer s3cret"})[0] == 200
    for open_path in ("/health", "/version", "/metrics"):
        assert d.get(open_path)[0] == 200
    env = double_env(VLLM_API_KEY="k2")
    e = launch(started, write_model(tmp_path, "m2"), env=env)
    assert e.get("/v1/models")[0] == 401
    assert e.get("/v1/models", headers={"authorization": "Bearer k2"})[0] == 200


def test_metrics_count(started, tmp_path):
    d = launch(started, write_model(tmp_path), "--served-model-name", "mm")
    for _ in range(3):
        d.post_json(
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "a b"}], "max_tokens": 5},
        )
    _, headers, body = d.get("/metrics")
    assert headers["content-type"].startswith("text/plain")
    text = body.decode()
    lbl = 'engine="0",model_name="mm"'
    assert f"vllm:prompt_tokens_total{{{lbl}}} 6.0" in text
    assert f"vllm:generation_tokens_total{{{lbl}}} 15.0" in text
    assert f'vllm:request_success_total{{{lbl},finished_reason="length"}} 3.0' in text
    assert f"vllm:num_requests_running{{{lbl}}} 0.0" in text


def test_keep_alive_and_concurrency(gen):
    c = gen.conn()
    try:
        for _ in range(50):
            c.request("GET", "/health")
            r = c.getresponse()
            assert r.status == 200 and r.read() == b""
    finally:
        c.close()
    failures: list[str] = []

    def worker() -> None:
        try:
            for _ in range(20):
                status, doc = gen.post_json(
                    "/v1/chat/completions",
                    {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
                )
                assert status == 200 and doc["usage"]["completion_tokens"] == 3
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(repr(exc))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_token_delay_streams_tokens_over_time(started, tmp_path):
    d = launch(started, write_model(tmp_path), env=double_env(KIT_DOUBLE_TOKEN_DELAY_MS="60"))
    t0 = time.monotonic()
    events = d.stream(
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 5, "stream": True},
    )
    assert time.monotonic() - t0 >= 0.3
    assert events[-1] == "[DONE]"


# ---------------------------------------------------------------------------------------------
# failure modes
# ---------------------------------------------------------------------------------------------

# cause -> (model argument, key line that must appear verbatim)
CAUSES = {
    "oom": (
        "/models/Qwen/Qwen3-8B",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate",
    ),
    "free_memory": (
        "/models/Qwen/Qwen3-8B",
        "on startup is less than desired GPU memory utilization (0.85, 67.31 GiB). Decrease GPU "
        "memory utilization or reduce GPU memory used by other processes.",
    ),
    "world_size": (
        "/models/Qwen/Qwen3-8B",
        "World size (4) is larger than the number of available GPUs (2) in this node.",
    ),
    "heads": (
        "/models/Qwen/Qwen3-8B",
        "Total number of attention heads (14) must be divisible by tensor parallel size (4).",
    ),
    "model_missing": (
        "/models/Qwen/Qwen3-8B",
        "huggingface_hub.errors.HFValidationError: Repo id must be in the form 'repo_name' or "
        "'namespace/repo_name': '/models/Qwen/Qwen3-8B'. Use `repo_type` argument if needed.",
    ),
    "gated_401": (
        "/models/meta-llama/Llama-3.1-8B-Instruct",
        "Access to model meta-llama/Llama-3.1-8B-Instruct is restricted. You must have access to "
        "it and be authenticated to access it. Please log in.",
    ),
    "trust_remote_code": (
        "nvidia/NVIDIA-Nemotron-Nano-9B-v2",
        "contains custom code which must be executed to correctly load the model.",
    ),
    "unrecognized_args": (
        "/models/Qwen/Qwen3-8B",
        "vllm: error: unrecognized arguments: --task embed",
    ),
}


def normalize(text: str) -> str:
    text = re.sub(r"\((APIServer|EngineCore_DP0) pid=\d+\)", r"(\1 pid=N)", text)
    return re.sub(r"\b\d\d-\d\d \d\d:\d\d:\d\d\b", "MM-DD hh:mm:ss", text)


def run_double(*args: str, env: dict[str, str], timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(DOUBLE), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_every_cause_has_a_fixture():
    assert sorted(p.stem for p in FIXTURES.glob("*.log")) == sorted(CAUSES)
    for cause, (_, key) in CAUSES.items():
        text = (FIXTURES / f"{cause}.log").read_text()
        assert key in text
        assert 1 <= text.count("\n") <= 40


@pytest.mark.parametrize("cause", sorted(CAUSES))
def test_forced_failure_prints_fixture(cause):
    model, key = CAUSES[cause]
    env = double_env(KIT_DOUBLE_FAIL=cause, NVIDIA_VISIBLE_DEVICES="2,3")
    p = run_double(
        "serve", model, "--served-model-name", "m", "--host", "127.0.0.1", "--port", str(free_port()),
        "--tensor-parallel-size", "4", "--gpu-memory-utilization", "0.85", "--max-model-len", "32768",
        env=env,
    )  # fmt: skip
    assert p.returncode == (2 if cause == "unrecognized_args" else 1)
    assert key in p.stderr
    assert normalize(p.stderr) == normalize((FIXTURES / f"{cause}.log").read_text())


def test_forced_failure_exit_code_knob():
    env = double_env(KIT_DOUBLE_FAIL="oom", KIT_DOUBLE_EXIT_CODE="7")
    p = run_double("serve", "/models/x/y", "--port", str(free_port()), env=env)
    assert p.returncode == 7


def test_real_world_size_check_uses_nvidia_visible_devices(started, tmp_path):
    model = write_model(tmp_path)
    env = double_env(NVIDIA_VISIBLE_DEVICES="2,3")
    p = run_double("serve", str(model), "-tp", "4", "--port", str(free_port()), env=env)
    assert p.returncode == 1
    assert (
        "World size (4) is larger than the number of available GPUs (2) in this node." in p.stderr
    )
    launch(started, model, "-tp", "2", env=env)  # two GPUs are enough for TP=2
    p = run_double(
        "serve", str(model), "-tp", "4", "-pp", "3", "--port", str(free_port()),
        env=double_env(KIT_DOUBLE_GPUS="8"),
    )  # fmt: skip
    assert "World size (12) is larger than the number of available GPUs (8)" in p.stderr


def test_real_heads_trust_and_missing_checks(tmp_path):
    env = double_env()
    port = str(free_port())
    heads = write_model(tmp_path, "heads", num_attention_heads=14)
    p = run_double("serve", str(heads), "-tp", "4", "--port", port, env=env)
    assert p.returncode == 1
    assert (
        "Total number of attention heads (14) must be divisible by tensor parallel size (4)."
        in p.stderr
    )
    custom = write_model(tmp_path, "custom", auto_map={"AutoConfig": "cfg.MyConfig"})
    p = run_double("serve", str(custom), "--port", port, env=env)
    assert p.returncode == 1
    assert "Please pass the argument `trust_remote_code=True`" in p.stderr
    p = run_double("serve", str(tmp_path / "absent" / "model"), "--port", port, env=env)
    assert p.returncode == 1
    assert "Repo id must be in the form 'repo_name' or 'namespace/repo_name'" in p.stderr


def test_trust_remote_code_flag_allows_custom_code(started, tmp_path):
    custom = write_model(tmp_path, auto_map={"AutoConfig": "cfg.MyConfig"})
    launch(started, custom, "--trust-remote-code")


def test_unrecognized_args_and_version_gated_flags(tmp_path):
    model = str(write_model(tmp_path))
    p = run_double("serve", model, "--foo", env=double_env())
    assert p.returncode == 2
    assert p.stderr.endswith("vllm: error: unrecognized arguments: --foo\n")
    p = run_double(
        "serve", model, "--task", "embed", env=double_env(KIT_DOUBLE_VLLM_VERSION="0.13.0")
    )
    assert p.returncode == 2
    assert "vllm: error: unrecognized arguments: --task embed" in p.stderr
    p = run_double(
        "serve", model, "--enable-reasoning", env=double_env(KIT_DOUBLE_VLLM_VERSION="0.10.0")
    )
    assert p.returncode == 2
    p = run_double(
        "serve", model, "--runner", "pooling", env=double_env(KIT_DOUBLE_VLLM_VERSION="0.10.0")
    )
    assert p.returncode == 2


def test_task_accepted_before_0_13(started, tmp_path):
    env = double_env(KIT_DOUBLE_VLLM_VERSION="0.12.0")
    d = launch(
        started, write_model(tmp_path, architectures=["BertModel"]), "--task", "embed", env=env
    )
    assert d.post_json("/v1/embeddings", {"input": "x"})[0] == 200


def test_crash_after_ready_exits_zero_with_oom(started, tmp_path):
    env = double_env(KIT_DOUBLE_CRASH_AFTER="0.8")
    d = launch(started, write_model(tmp_path), env=env)
    assert d.get("/health")[0] == 200
    assert d.proc.wait(timeout=5) == 0
    err = d.proc.stderr.read()
    assert "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate" in err
    assert "GPU 0 has a total capacity of 79.19 GiB of which" in err
    assert "EngineDeadError: EngineCore encountered an issue." in err
    assert "Engine core proc EngineCore_DP0 died unexpectedly, shutting down client." in err
    assert not port_open(d.port)


def test_crash_during_loading(started, tmp_path):
    env = double_env(
        KIT_DOUBLE_CRASH_AFTER="0.2", KIT_DOUBLE_LOAD_SECONDS="5", KIT_DOUBLE_EXIT_CODE="3"
    )
    d = launch(started, write_model(tmp_path), env=env, ready=False)
    assert d.proc.wait(timeout=5) == 3
    assert "torch.OutOfMemoryError: CUDA out of memory." in d.proc.stderr.read()


def test_never_ready(started, tmp_path):
    env = double_env(KIT_DOUBLE_NEVER_READY="1", KIT_DOUBLE_LOG_INTERVAL="0.2")
    d = launch(started, write_model(tmp_path), env=env, ready=False)
    time.sleep(1.0)
    assert d.proc.poll() is None and not port_open(d.port)
    code, out, _ = d.stop()
    assert code == 0
    assert out.count("Waiting for 1 local, 0 remote core engine proc(s) to start.") >= 2


def test_http_503_mode(started, tmp_path):
    d = launch(started, write_model(tmp_path), env=double_env(KIT_DOUBLE_HTTP_503="1"))
    assert d.get("/health")[0] == 503
    status, doc = d.post_json(
        "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}
    )
    assert status == 503 and doc["error"]["code"] == 503
    assert d.get("/v1/models")[0] == 503
    assert d.get("/version")[0] == 200


def test_port_in_use_fails_like_vllm(started, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = run_double(
            "serve",
            str(write_model(tmp_path)),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            env=double_env(),
        )
    assert p.returncode == 1
    assert "OSError: [Errno 98] Address already in use" in p.stderr
