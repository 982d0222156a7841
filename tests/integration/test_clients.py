"""The clients people already use, against a running kit stack (real Docker, engine double).

One simulated stack (`stacks/sim-demo.yaml`: chat `sim-qwen3-8b` with a reasoning parser,
embeddings `sim-embed`, reranker `sim-rerank`) is brought up once for the whole module with
`kit.lifecycle.up`, and answers:

- the `openai` SDK: chat (plain and streamed with `stream_options.include_usage`), the
  reasoning field vLLM adds, embeddings, and rerank through the SDK's generic `post`;
- `langchain-openai`: `ChatOpenAI` invoke/stream (with `stream_usage`) and `OpenAIEmbeddings`
  (with `check_embedding_ctx_length=False`; the default downloads a tiktoken file);
- a second stack with `defaults.api_key_env_file`: the right key works, a wrong one is a 401.

Nothing here may reach the internet: a module-wide guard refuses every non-loopback name
lookup and connection, and records what was attempted. How-to: docs/clients.md.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

from dockerutil import SIM_MODELS, compose_down, write_sim_stack
from kit import lifecycle
from kit.client import endpoint_for
from kit.engine import Project
from kit.plan import build_plan
from kit.render import RenderOptions
from kit.spec import load_stack
from kit.stack_plan import Plan

CHAT, EMBED, RERANK = "sim-qwen3-8b", "sim-embed", "sim-rerank"
TIMEOUT = 10.0  # seconds, for every client: a hung server fails a test quickly
PROMPT = "How many students are in each class if there are 98 in all?"

# the source notes' rerank example
QUERY = "A man is eating pasta."
DOCUMENTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
]


# --- no internet -------------------------------------------------------------------------------


class InternetBlocked(OSError):
    """Raised by the module's network guard for anything that is not loopback."""


def _is_loopback(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").split("%", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(scope="module")
def blocked() -> Iterator[list[str]]:
    """Refuse (and record) every non-loopback name lookup and TCP connection in this process.

    Docker and compose run as subprocesses and are not affected.
    """
    attempts: list[str] = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host):
            attempts.append(str(host))
            raise InternetBlocked(f"test_clients: lookup of {host!r} refused (no internet here)")
        return real_getaddrinfo(host, *args, **kwargs)

    def check(address: Any) -> None:
        if isinstance(address, tuple) and not _is_loopback(address[0]):
            attempts.append(str(address[0]))
            raise InternetBlocked(f"test_clients: connection to {address!r} refused")

    def connect(self, address):
        check(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        check(address)
        return real_connect_ex(self, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)
        yield attempts


@pytest.fixture(scope="module")
def offline_env(tmp_path_factory) -> Iterator[Path]:
    """Environment for the whole module: offline hubs, an empty tiktoken cache, no proxies,
    no OpenAI settings leaking in from the caller, and a private kit state folder."""
    base = tmp_path_factory.mktemp("clients")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KIT_STATE_DIR", str(base / "state"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setenv("TIKTOKEN_CACHE_DIR", str(base / "tiktoken-empty"))
        for var in ("NO_PROXY", "no_proxy"):
            mp.setenv(var, "127.0.0.1,localhost,::1")
        for var in (
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "OPENAI_API_BASE",
            "OPENAI_PROXY",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ):
            mp.delenv(var, raising=False)
        yield base


# --- the stacks --------------------------------------------------------------------------------


# the double "loads" for 1 s instead of 8/3/3: the stacks are up in a few seconds
FAST = {svc: {"KIT_DOUBLE_LOAD_SECONDS": "1"} for svc in ("llm", "embed", "rerank")}


@pytest.fixture(scope="module")
def launch(docker_engine, offline_env, blocked) -> Iterator[Any]:
    """``launch(**write_sim_stack kwargs) -> Plan``: up for real; every stack started in this
    module is removed at the end with ``docker compose -p NAME down``, even after failures."""
    started: list[str] = []
    folder = offline_env

    def up(**kwargs: Any) -> Plan:
        path = write_sim_stack(folder, env=FAST, **kwargs)
        plan = build_plan(load_stack(path))
        started.append(plan.stack.name)
        lifecycle.up(plan, Project(plan, options=RenderOptions(image=docker_engine)))
        return plan

    yield up
    for name in started:
        compose_down(name)


@pytest.fixture(scope="module")
def stack(launch) -> Plan:
    """The three-service simulation stack, up once for the module, no API key."""
    return launch()


API_KEY = "sk-kit-test-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def key_stack(launch, offline_env) -> Plan:
    """Chat and rerank with ``defaults.api_key_env_file`` naming an env file with VLLM_API_KEY."""
    env_file = offline_env / "llm.env"
    env_file.write_text(f"# the stack's secrets\nVLLM_API_KEY={API_KEY}\n")
    env_file.chmod(0o600)
    return launch(defaults={"api_key_env_file": str(env_file)}, only=("llm", "rerank"))


def url(plan: Plan, service: str) -> str:
    """The OpenAI-style base URL (``.../v1``) of one service of a running stack."""
    return endpoint_for(plan, plan.service(service)).base_url + "/v1"


def sdk(plan: Plan, service: str, api_key: str = "EMPTY") -> openai.OpenAI:
    return openai.OpenAI(
        base_url=url(plan, service), api_key=api_key, timeout=TIMEOUT, max_retries=0
    )


def chat_model(plan: Plan, api_key: str = "EMPTY", **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=url(plan, "llm"),
        api_key=api_key,
        model=CHAT,
        max_tokens=16,
        timeout=TIMEOUT,
        max_retries=0,
        **kwargs,
    )


def embeddings_model(plan: Plan, **kwargs: Any) -> OpenAIEmbeddings:
    kwargs.setdefault("check_embedding_ctx_length", False)
    return OpenAIEmbeddings(
        base_url=url(plan, "embed"),
        api_key="EMPTY",
        model=EMBED,
        timeout=TIMEOUT,
        max_retries=0,
        **kwargs,
    )


def embed_dim() -> int:
    """The double's embedding size: the simulated model's hidden_size."""
    return json.loads((SIM_MODELS / "tiny-embed" / "config.json").read_text())["hidden_size"]


def messages(text: str = PROMPT) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# --- openai SDK --------------------------------------------------------------------------------


def test_sdk_lists_each_served_name(stack):
    for service, served in (("llm", CHAT), ("embed", EMBED), ("rerank", RERANK)):
        assert [m.id for m in sdk(stack, service).models.list()] == [served]


def test_sdk_chat_plain_content_and_usage(stack):
    r = sdk(stack, "llm").chat.completions.create(
        model=CHAT, messages=messages(), max_tokens=16, temperature=0
    )
    assert r.model == CHAT and r.object == "chat.completion"
    (choice,) = r.choices
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason == "length"  # the double always writes max_tokens tokens
    u = r.usage
    assert u is not None
    assert u.prompt_tokens == len(PROMPT.split())  # the double: one word is one token
    assert u.completion_tokens == 16  # reasoning tokens count as completion tokens
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_sdk_chat_stream_with_include_usage(stack):
    client = sdk(stack, "llm")
    plain = client.chat.completions.create(model=CHAT, messages=messages(), max_tokens=16)
    stream = client.chat.completions.create(
        model=CHAT,
        messages=messages(),
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert len(chunks) > 3 and all(c.object == "chat.completion.chunk" for c in chunks)
    *body, last = chunks
    # usage comes once, in an extra final chunk with no choices
    assert last.choices == [] and last.usage is not None
    assert all(c.usage is None for c in body)
    assert last.usage.model_dump() == plain.usage.model_dump()
    assert body[0].choices[0].delta.role == "assistant"
    assert body[-1].choices[0].finish_reason == "length"
    content = "".join(c.choices[0].delta.content or "" for c in body)
    assert content == plain.choices[0].message.content  # deterministic double


def test_sdk_chat_stream_without_include_usage_has_no_usage(stack):
    stream = sdk(stack, "llm").chat.completions.create(
        model=CHAT, messages=messages(), max_tokens=8, stream=True
    )
    chunks = list(stream)
    assert chunks and all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)  # no usage-only chunk either


def test_sdk_reasoning_field_plain_and_streamed(stack):
    """vLLM < 0.16 sends `reasoning_content` (the stack pins 0.11.0); the SDK's models keep
    unknown fields, so it is reachable as an attribute and in `model_extra`."""
    client = sdk(stack, "llm")
    r = client.chat.completions.create(model=CHAT, messages=messages(), max_tokens=16)
    msg = r.choices[0].message
    reasoning = getattr(msg, "reasoning_content", None)
    assert isinstance(reasoning, str) and reasoning.strip()
    assert msg.model_extra["reasoning_content"] == reasoning
    assert "reasoning" not in (msg.model_extra or {})  # the 0.16+ name is not sent by 0.11.0
    assert reasoning not in (msg.content or "")  # the parser took it out of the answer

    stream = client.chat.completions.create(
        model=CHAT, messages=messages(), max_tokens=16, stream=True
    )
    streamed = ""
    for chunk in stream:
        for choice in chunk.choices:
            streamed += getattr(choice.delta, "reasoning_content", None) or ""
    assert streamed == reasoning

    # Qwen3-style: thinking off through the chat template -> no reasoning, all content
    off = client.chat.completions.create(
        model=CHAT,
        messages=messages(),
        max_tokens=16,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    off = off.choices[0].message
    assert getattr(off, "reasoning_content", None) is None
    assert off.content and len(off.content.split()) == 16


def test_sdk_embeddings(stack):
    client = sdk(stack, "embed")
    inputs = ["What is the capital of China?", "Beijing", "A man is eating pasta."]
    r = client.embeddings.create(model=EMBED, input=inputs)
    assert r.model == EMBED
    assert [d.index for d in r.data] == [0, 1, 2]
    dim = embed_dim()
    assert all(len(d.embedding) == dim for d in r.data)
    assert all(abs(sum(x * x for x in d.embedding) - 1.0) < 1e-4 for d in r.data)
    assert r.usage.prompt_tokens == sum(len(t.split()) for t in inputs)
    # the SDK asks for base64 unless told otherwise and decodes it; floats give the same
    floats = client.embeddings.create(model=EMBED, input=inputs, encoding_format="float")
    for a, b in zip(r.data, floats.data, strict=True):
        assert max(abs(x - y) for x, y in zip(a.embedding, b.embedding, strict=True)) < 1e-6
    one = client.embeddings.create(model=EMBED, input=inputs[1])
    assert len(one.data) == 1
    assert one.data[0].embedding == r.data[1].embedding


def check_rerank(results: list[dict[str, Any]], n: int) -> None:
    assert sorted(r["index"] for r in results) == list(range(n))
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(r["document"]["text"] == DOCUMENTS[r["index"]] for r in results)


def test_sdk_rerank_through_generic_post(stack):
    """The SDK has no rerank method; its `post` sends to base_url + path with the same auth,
    timeout and error handling, and `cast_to=object` returns the JSON as a dict."""
    client = sdk(stack, "rerank")
    body = {"model": RERANK, "query": QUERY, "documents": DOCUMENTS}
    data = client.post("/rerank", cast_to=object, body=body)  # -> POST /v1/rerank
    assert isinstance(data, dict) and data["model"] == RERANK
    check_rerank(data["results"], len(DOCUMENTS))
    assert data["results"][0]["index"] == 0  # "A man is eating food."
    top = client.post("/rerank", cast_to=object, body={**body, "top_n": 2})["results"]
    assert [r["index"] for r in top] == [r["index"] for r in data["results"][:2]]

    # the same with plain httpx, on the route the source notes' curl uses
    with httpx.Client(base_url=url(stack, "rerank"), timeout=TIMEOUT) as http:
        resp = http.post("/rerank", json=body)
    assert resp.status_code == 200
    assert [r["index"] for r in resp.json()["results"]] == [r["index"] for r in data["results"]]


def test_sdk_errors_wrong_model_and_wrong_port(stack):
    client = sdk(stack, "llm")
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="deepseek-r1", messages=messages(), max_tokens=4)
    assert info.value.status_code == 404 and "does not exist" in str(info.value)

    # chat sent to the embedding port: vLLM 0.11 answers HTTP 200 with an error body
    # (vllm-project/vllm#21704), so the SDK raises nothing and returns an empty completion
    wrong = sdk(stack, "embed")
    r = wrong.chat.completions.create(model=EMBED, messages=messages(), max_tokens=4)
    assert r.choices is None
    assert "does not support Chat Completions API" in r.model_extra["error"]["message"]
    # ... and streamed, the JSON body is not SSE: zero chunks, no exception
    stream = wrong.chat.completions.create(
        model=EMBED, messages=messages(), max_tokens=4, stream=True
    )
    assert list(stream) == []


# --- langchain-openai --------------------------------------------------------------------------


def test_langchain_chat_invoke(stack):
    msg = chat_model(stack).invoke(PROMPT)
    plain = sdk(stack, "llm").chat.completions.create(
        model=CHAT, messages=messages(), max_tokens=16
    )
    assert msg.content == plain.choices[0].message.content
    assert msg.usage_metadata is not None
    assert msg.usage_metadata["input_tokens"] == plain.usage.prompt_tokens
    assert msg.usage_metadata["output_tokens"] == plain.usage.completion_tokens
    assert msg.usage_metadata["total_tokens"] == plain.usage.total_tokens
    assert msg.response_metadata["model_name"] == CHAT
    # ChatOpenAI keeps only OpenAI's own fields: vLLM's reasoning text is dropped
    assert "reasoning_content" not in msg.additional_kwargs
    assert plain.choices[0].message.model_extra["reasoning_content"] not in json.dumps(
        msg.model_dump(), default=str
    )


def test_langchain_chat_stream_and_stream_usage(stack):
    expected = chat_model(stack).invoke(PROMPT)

    # with a custom base_url, langchain does NOT ask for usage when streaming by default
    chunks = list(chat_model(stack).stream(PROMPT))
    assert len(chunks) > 3
    assert "".join(c.content for c in chunks) == expected.content
    assert all(c.usage_metadata is None for c in chunks)

    # stream_usage=True (per call or on the model) sends stream_options.include_usage
    for model, kwargs in (
        (chat_model(stack), {"stream_usage": True}),
        (chat_model(stack, stream_usage=True), {}),
    ):
        total = None
        for chunk in model.stream(PROMPT, **kwargs):
            total = chunk if total is None else total + chunk
        assert total is not None
        assert total.content == expected.content
        assert total.usage_metadata is not None
        for key in ("input_tokens", "output_tokens", "total_tokens"):
            assert total.usage_metadata[key] == expected.usage_metadata[key]


def test_langchain_embeddings(stack):
    emb = embeddings_model(stack)
    texts = ["What is the capital of China?", "Beijing", "A man is eating pasta."]
    docs = emb.embed_documents(texts)
    assert len(docs) == 3 and all(len(v) == embed_dim() for v in docs)
    query = emb.embed_query(texts[1])
    assert query == docs[1]
    direct = sdk(stack, "embed").embeddings.create(model=EMBED, input=texts[1])
    assert max(abs(x - y) for x, y in zip(query, direct.data[0].embedding, strict=True)) < 1e-6


def test_langchain_embeddings_default_wants_tiktoken_from_the_internet(stack, blocked):
    """With the default check_embedding_ctx_length=True, OpenAIEmbeddings tokenizes with
    tiktoken first (cl100k_base for unknown model names), which downloads its BPE file."""
    before = len(blocked)
    with pytest.raises(Exception) as info:  # requests' ConnectionError, from the guard
        embeddings_model(stack, check_embedding_ctx_length=True).embed_query("hello")
    tried = blocked[before:]
    assert tried, f"expected a download attempt, got {info.value!r}"
    assert any("openaipublic" in host for host in tried), tried


# --- API key from the stack's env file --------------------------------------------------------


def test_api_key_from_env_file(key_stack):
    ep = endpoint_for(key_stack, key_stack.service("llm"))
    assert ep.api_key == API_KEY  # the kit read it from defaults.api_key_env_file

    ok = sdk(key_stack, "llm", api_key=ep.api_key).chat.completions.create(
        model=CHAT, messages=messages(), max_tokens=4
    )
    assert ok.choices[0].message.content

    for bad in ("wrong-key", "EMPTY"):
        with pytest.raises(openai.AuthenticationError) as info:
            sdk(key_stack, "llm", api_key=bad).chat.completions.create(
                model=CHAT, messages=messages(), max_tokens=4
            )
        assert info.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        sdk(key_stack, "llm", api_key="wrong-key").models.list()

    # langchain: the same key; its auth error subclasses openai.AuthenticationError
    assert chat_model(key_stack, api_key=API_KEY).invoke(PROMPT).content
    with pytest.raises(openai.AuthenticationError):
        chat_model(key_stack, api_key="wrong-key").invoke(PROMPT)

    # rerank through the SDK is under /v1: the key is needed
    body = {"model": RERANK, "query": QUERY, "documents": DOCUMENTS}
    data = sdk(key_stack, "rerank", api_key=API_KEY).post("/rerank", cast_to=object, body=body)
    check_rerank(data["results"], len(DOCUMENTS))
    with pytest.raises(openai.AuthenticationError):
        sdk(key_stack, "rerank", api_key="wrong-key").post("/rerank", cast_to=object, body=body)

    # vLLM's key check covers only paths starting with /v1: /health and the unversioned
    # /rerank answer without a key (the double does the same)
    base = endpoint_for(key_stack, key_stack.service("rerank")).base_url
    with httpx.Client(base_url=base, timeout=TIMEOUT) as http:
        assert http.get("/health").status_code == 200
        assert http.post("/v1/rerank", json=body).status_code == 401
        assert http.post("/rerank", json=body).status_code == 200


def test_nothing_reached_for_the_internet_except_tiktoken(blocked):
    """Every blocked attempt in this module was the deliberate tiktoken download."""
    assert all("openaipublic" in host for host in blocked), blocked
