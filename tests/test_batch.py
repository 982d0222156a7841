"""``kit batch`` over real HTTP: the engine double as a host subprocess, and a tiny stdlib
asyncio server in this file for failures the double cannot script (503/429 for the first K
attempts, 400, dropped connections, slow answers)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from doubleutil import ROOT, Double, double_env, free_port, write_model
from kit.batch import (
    BatchOptions,
    errors_path_for,
    new_summary,
    output_lock,
    prepare_batch,
    read_output,
    run_batch,
    run_batch_async,
)
from kit.cli import KitGroup
from kit.cli_batch import batch_command
from kit.errors import KitError, NotReadyError
from kit.stack_plan import Plan
from stackutil import BASE_STACK, deploy_record

FAST = BatchOptions(backoff_initial=0.01, backoff_max=0.05, timeout=10)


# --- helpers ----------------------------------------------------------------------------------


def start_double(model: Path, name: str, *args: str, **env: str) -> Double:
    """The engine double serving ``name``, ready (port open), with no load delay."""
    env = {"KIT_DOUBLE_LOAD_SECONDS": "0", **env}
    return Double(model, "--served-model-name", name, *args, env=double_env(**env)).wait_ready()


def model_dir(root: Path, name: str, arch: str) -> Path:
    return write_model(root, name, architectures=[arch], num_attention_heads=8, hidden_size=32)


def make_plan(
    folder: Path, services: dict[str, tuple[str, int]], api_key: str | None = None
) -> tuple[Plan, Path]:
    """A stack file with one service per (kind, port), each on its own GPU."""
    data = json.loads(json.dumps(BASE_STACK))
    data["services"] = {
        name: {"kind": kind, "model": f"org/{name}", "gpus": [i], "port": port}
        for i, (name, (kind, port)) in enumerate(services.items())
    }
    if api_key is not None:
        env = folder / "llm.env"
        env.write_text(f"VLLM_API_KEY={api_key}\n")
        data["defaults"]["api_key_env_file"] = str(env)
    path = folder / "stack.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return deploy_record(path), path


@pytest.fixture(autouse=True)
def _state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deployment records of these tests live in their own folder."""
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("".join(line + "\n" for line in lines))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "output must end with a complete line"
    return [json.loads(line) for line in text.splitlines()]


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    ids = [r["custom_id"] for r in rows]
    assert len(ids) == len(set(ids)), f"duplicated custom_ids: {Counter(ids).most_common(3)}"
    return {r["custom_id"]: r for r in rows}


def embed_req(cid: str, text: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": cid,
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"input": text, **body},
    }


def chat_req(cid: str, text: str, max_tokens: int = 4, **body: Any) -> dict[str, Any]:
    msgs = [{"role": "user", "content": text}]
    return {
        "custom_id": cid,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"messages": msgs, "max_tokens": max_tokens, **body},
    }


def batch(plan: Plan, service: str, inp: Path, out: Path, opts: BatchOptions = FAST):
    job = prepare_batch(plan, service, inp, out, opts)
    return job, run_batch(job)


def cli_group() -> click.Group:
    @click.group(cls=KitGroup)
    def group() -> None:
        pass

    group.add_command(batch_command)
    return group


# --- a scriptable stdlib HTTP server ----------------------------------------------------------

# behave(path, body, attempt) -> (status, json_body, headers, delay_s) | "drop"
Behave = Callable[[str, dict[str, Any], int], Any]


class FlakyServer:
    """HTTP/1.1 on asyncio streams in a thread. Each POST body's ``input`` is its key; the
    server counts attempts per key and lets ``behave`` decide the answer."""

    def __init__(self, behave: Behave) -> None:
        self.behave = behave
        self.attempts: Counter[str] = Counter()
        self.headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FlakyServer:
        self.thread.start()
        self.ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(5)
        self.thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._conn, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()
        self.loop.close()

    async def _shutdown(self) -> None:
        """Close the listener and every open connection, then stop the loop."""
        self.server.close()
        me = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not me]
        for t in rest:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        self.loop.call_soon(self.loop.stop)

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        first = await reader.readline()
        if not first:
            return False
        _method, path, _ = first.decode().split(" ", 2)
        headers: dict[str, str] = {}
        while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
            k, _, v = h.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        raw = await reader.readexactly(n) if n else b""
        if path == "/health":
            await self._send(writer, 200, {}, {})
            return True
        body = json.loads(raw)
        self.headers.append(headers)
        key = str(body.get("input"))
        self.attempts[key] += 1
        action = self.behave(path, body, self.attempts[key])
        if action == "drop":
            return False
        status, payload, extra, delay = action
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(delay)
            await self._send(writer, status, payload, extra)
        finally:
            self.in_flight -= 1
        return True

    @staticmethod
    async def _send(
        writer: asyncio.StreamWriter, status: int, payload: Any, extra: dict[str, str]
    ) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        head = [f"HTTP/1.1 {status} X", "Content-Type: application/json"]
        head += [f"Content-Length: {len(data)}", *(f"{k}: {v}" for k, v in extra.items())]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await writer.drain()


def ok_answer(body: dict[str, Any], delay: float = 0.0) -> tuple[int, Any, dict, float]:
    echo = {"object": "list", "model": body.get("model"), "echo": body.get("input"), "data": []}
    return 200, echo, {}, delay


@pytest.fixture
def flaky(tmp_path: Path) -> Iterator[Callable[[Behave], tuple[FlakyServer, Plan]]]:
    servers: list[FlakyServer] = []

    def start(behave: Behave) -> tuple[FlakyServer, Plan]:
        srv = FlakyServer(behave).__enter__()
        servers.append(srv)
        plan, _ = make_plan(tmp_path, {"emb": ("embed", srv.port)})
        return srv, plan

    yield start
    for s in servers:
        s.__exit__()


# --- the engine double -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def doubles(tmp_path_factory) -> Iterator[dict[str, Double]]:
    root = tmp_path_factory.mktemp("models")
    made = {
        "llm": start_double(model_dir(root, "llm", "Qwen3ForCausalLM"), "llm"),
        "emb": start_double(
            model_dir(root, "emb", "BertModel"), "emb", "--runner", "pooling", "--convert", "embed"
        ),
        "rr": start_double(
            model_dir(root, "rr", "XLMRobertaModel"),
            "rr",
            "--runner",
            "pooling",
            "--convert",
            "classify",
        ),
    }
    try:
        yield made
    finally:
        for d in made.values():
            d.stop()


@pytest.fixture
def stack(tmp_path: Path, doubles: dict[str, Double]) -> tuple[Plan, Path]:
    kinds = {"llm": "chat", "emb": "embed", "rr": "rerank"}
    return make_plan(tmp_path, {n: (kinds[n], d.port) for n, d in doubles.items()})


def direct(double: Double, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The double's answer to ``body`` sent straight to it (no kit in between)."""
    status, answer = double.post_json(path, body)
    assert status == 200, answer
    return answer


# --- tests: the double ------------------------------------------------------------------------


def test_chat_lines_get_output_lines_in_vllm_batch_shape(tmp_path, stack, doubles):
    plan, _ = stack
    rows = [chat_req(f"c{i}", f"question number {i}", model="gpt-4o") for i in range(12)]
    rows += [chat_req(f"n{i}", f"no model {i}") for i in range(3)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    job, summary = batch(plan, "llm", inp, out)

    # the model note is said once, with counts, not per line
    assert job.notes == [
        "body.model set to 'llm' (the service's served name): 3 omitted it; "
        "12 named another model ('gpt-4o')"
    ]
    got = by_id(read_jsonl(out))
    assert set(got) == {r["custom_id"] for r in rows}
    for r in rows:
        line = got[r["custom_id"]]
        assert set(line) == {"id", "custom_id", "response", "error"}
        assert line["id"].startswith("batch_req_") and line["error"] is None
        resp = line["response"]
        assert resp["status_code"] == 200 and resp["request_id"].startswith("req_")
        assert resp["body"]["object"] == "chat.completion" and resp["body"]["model"] == "llm"
        # the answer is the one for this line's own prompt
        expect = direct(doubles["llm"], r["url"], {**r["body"], "model": "llm"})
        assert resp["body"]["choices"][0]["message"] == expect["choices"][0]["message"]
    assert (summary.done, summary.failed, summary.skipped, summary.invalid) == (15, 0, 0, 0)
    assert summary.ok and not errors_path_for(out).exists()


def test_embeddings_map_to_their_own_custom_id(tmp_path, stack, doubles):
    plan, _ = stack
    texts = [f"text {i} " + "word " * (i % 5) for i in range(20)]
    rows = [embed_req(f"e{i}", t) for i, t in enumerate(texts)]
    rows.append(embed_req("batch-of-2", ["alpha beta", "gamma"]))  # type: ignore[arg-type]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    _, summary = batch(plan, "emb", inp, out, BatchOptions(concurrency=5))
    got = by_id(read_jsonl(out))
    for i, t in enumerate(texts):
        vec = got[f"e{i}"]["response"]["body"]["data"][0]["embedding"]
        want = direct(doubles["emb"], "/v1/embeddings", {"input": t})["data"][0]["embedding"]
        assert vec == want
    assert len(got["batch-of-2"]["response"]["body"]["data"]) == 2
    assert summary.done == 21


def test_rerank_and_score_urls(tmp_path, stack, doubles):
    plan, _ = stack
    docs = ["a man is eating food", "a girl plays violin", "a man eats pasta"]
    rows = [
        {"custom_id": f"r-{url}", "method": "POST", "url": url,
         "body": {"query": "a man is eating pasta", "documents": docs}}
        for url in ("/v1/rerank", "/rerank", "/v2/rerank")
    ]  # fmt: skip
    rows.append(
        {"custom_id": "score", "method": "post", "url": "/v1/score",
         "body": {"text_1": "a man is eating pasta", "text_2": docs}}
    )  # fmt: skip
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    _, summary = batch(plan, "rr", inp, out)
    got = by_id(read_jsonl(out))
    for url in ("/v1/rerank", "/rerank", "/v2/rerank"):
        results = got[f"r-{url}"]["response"]["body"]["results"]
        want = direct(doubles["rr"], url, rows[0]["body"])["results"]
        assert [(r["index"], r["relevance_score"]) for r in results] == [
            (r["index"], r["relevance_score"]) for r in want
        ]
        assert {r["index"] for r in results} == {0, 1, 2}
    assert len(got["score"]["response"]["body"]["data"]) == 3
    assert summary.done == 4 and summary.ok


def test_bad_lines_are_reported_with_line_numbers_and_the_rest_runs(tmp_path, stack):
    _, path = stack
    rows: list[Any] = [
        embed_req("a", "fine one"),  # 1
        '{"custom_id": "x", "method": ',  # 2 invalid JSON
        {"method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}},  # 3 no custom_id
        "",  # 4 blank: ignored
        embed_req("a", "again"),  # 5 duplicate of line 1
        {**embed_req("get", "x"), "method": "GET"},  # 6
        {**embed_req("unknown", "x"), "url": "/v1/images"},  # 7
        {**embed_req("list", "x"), "body": ["x"]},  # 8
        chat_req("chat-on-embed", "hello"),  # 9 kind mismatch
        "[1, 2]",  # 10 not an object
        embed_req("b", "fine two"),  # 11
    ]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(cli_group(), ["batch", str(path), "emb", str(inp), "-o", str(out)])
    assert res.exit_code == 6, res.output
    assert "invalid 8" in res.stdout and "done 2" in res.stdout
    assert "8 of 10 lines failed or were invalid" in res.stderr
    assert set(by_id(read_jsonl(out))) == {"a", "b"}

    errors = read_jsonl(errors_path_for(out))
    assert errors_path_for(out).name == "out.errors.jsonl"
    msgs = {e["error"]["line"]: e["error"]["message"] for e in errors}
    assert all(e["error"]["code"] == "invalid_request" and e["response"] is None for e in errors)
    assert sorted(msgs) == [2, 3, 5, 6, 7, 8, 9, 10]
    assert msgs[2].startswith("line 2: not valid JSON")
    assert "custom_id is missing" in msgs[3]
    assert "custom_id 'a' is already used on line 1" in msgs[5]
    assert "method 'GET' is not supported" in msgs[6]
    assert "url '/v1/images' is not a batch endpoint" in msgs[7]
    assert "body must be a JSON object" in msgs[8]
    assert msgs[9] == (
        "line 9: custom_id 'chat-on-embed': url /v1/chat/completions is a chat request, but "
        "service 'emb' is an embed service (it serves /v1/embeddings); send chat requests to a "
        "chat service of the stack"
    )
    assert "line 9: custom_id 'chat-on-embed'" in res.stdout  # listed in the summary too
    assert [e["custom_id"] for e in errors if e["error"]["line"] in (5, 9)] == [
        "a",
        "chat-on-embed",
    ]

    # --allow-failures: same result, exit 0; a fixed input clears the errors file
    res = CliRunner().invoke(
        cli_group(), ["batch", str(path), "emb", str(inp), "-o", str(out), "--allow-failures"]
    )
    assert res.exit_code == 0 and "skipped 2 (already done)" in res.stdout
    write_jsonl(inp, [embed_req("a", "fine one"), embed_req("c", "new")])
    res = CliRunner().invoke(cli_group(), ["batch", str(path), "emb", str(inp), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert not errors_path_for(out).exists()
    assert set(by_id(read_jsonl(out))) == {"a", "b", "c"}


def test_resume_after_cancel_and_truncated_line_gives_each_id_once(tmp_path):
    model = model_dir(tmp_path, "slow", "Qwen3ForCausalLM")
    slow = start_double(model, "slow", KIT_DOUBLE_TOKEN_DELAY_MS="25")
    try:
        plan, _ = make_plan(tmp_path, {"slow": ("chat", slow.port)})
        rows = [chat_req(f"id{i}", f"prompt {i}", max_tokens=4) for i in range(40)]
        inp = write_jsonl(tmp_path / "in.jsonl", rows)
        out = tmp_path / "out.jsonl"
        opts = BatchOptions(concurrency=4)

        async def interrupted() -> None:
            job = prepare_batch(plan, "slow", inp, out, opts)
            task = asyncio.create_task(run_batch_async(job))
            while not out.exists() or out.read_text().count("\n") < 8:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(interrupted())
        first = by_id(read_jsonl(out))  # valid JSON lines only, none duplicated
        assert 8 <= len(first) < 40
        # a kill -9 in the middle of a write leaves half a line: dropped and redone
        with out.open("ab") as f:
            f.write(b'{"id": "batch_req_x", "custom_id": "id39", "respo')

        job, summary = batch(plan, "slow", inp, out, opts)
        assert "the last line of the output was cut off (interrupted write): redone" in job.notes
        assert summary.skipped == len(first) and summary.done == 40 - len(first)
        final = by_id(read_jsonl(out))
        assert set(final) == {f"id{i}" for i in range(40)}
        assert all(final[c] == first[c] for c in first)  # done lines never repeated

        # a third run has nothing to do and sends nothing
        job, summary = batch(plan, "slow", inp, out, opts)
        assert not job.todo and summary.skipped == 40 and summary.done == 0
        assert out.read_text().count("\n") == 40
    finally:
        slow.stop()


def test_ctrl_c_leaves_a_valid_file_and_the_same_command_resumes(tmp_path):
    model = model_dir(tmp_path, "slow", "Qwen3ForCausalLM")
    slow = start_double(model, "slow", KIT_DOUBLE_TOKEN_DELAY_MS="25")
    try:
        _, stack_path = make_plan(tmp_path, {"slow": ("chat", slow.port)})
        rows = [chat_req(f"id{i}", f"prompt {i}", max_tokens=4) for i in range(40)]
        inp = write_jsonl(tmp_path / "in.jsonl", rows)
        out = tmp_path / "out.jsonl"
        code = (
            "import click, sys\n"
            "from kit.cli import KitGroup\n"
            "from kit.cli_batch import batch_command\n"
            "g = KitGroup('kit', commands=[batch_command])\n"
            "g(sys.argv[1:], prog_name='kit')\n"
        )
        args = ["batch", str(stack_path), "slow", str(inp), "-o", str(out), "--concurrency", "4"]
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args], cwd=ROOT, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while (not out.exists() or out.read_text().count("\n") < 6) and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=15)
        assert proc.returncode == 130, stdout + stderr
        assert "batch interrupted" in stderr and "to resume" in stderr
        first = by_id(read_jsonl(out))
        assert 6 <= len(first) < 40

        proc = subprocess.run(
            [sys.executable, "-c", code, *args], cwd=ROOT, text=True, capture_output=True,
            timeout=30, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"skipped {len(first)} (already done)" in proc.stdout
        assert set(by_id(read_jsonl(out))) == {f"id{i}" for i in range(40)}
    finally:
        slow.stop()


def test_api_key_is_sent_and_never_printed(tmp_path):
    model = model_dir(tmp_path, "emb", "BertModel")
    key = "sk-very-secret-123"
    d = start_double(model, "emb", "--runner", "pooling", "--convert", "embed", "--api-key", key)
    try:
        _, path = make_plan(tmp_path, {"emb": ("embed", d.port)}, api_key=key)
        inp = write_jsonl(tmp_path / "in.jsonl", [embed_req(f"k{i}", "x") for i in range(3)])
        out = tmp_path / "out.jsonl"
        res = CliRunner().invoke(cli_group(), ["batch", str(path), "emb", str(inp), "-o", str(out)])
        assert res.exit_code == 0, res.output
        assert key not in res.output and key not in out.read_text()
        assert all(r["error"] is None for r in read_jsonl(out))

        # without the key: a 401 per line, recorded, not retried, with what to change
        plan, path = make_plan(tmp_path, {"emb": ("embed", d.port)})
        _, summary = batch(plan, "emb", inp, tmp_path / "nokey.jsonl")
        rows = read_jsonl(tmp_path / "nokey.jsonl")
        assert summary.failed == 3 and summary.retries == 0
        assert rows[0]["error"]["code"] == "http_401"
        assert "set defaults.api_key_env_file" in rows[0]["error"]["message"]
    finally:
        d.stop()


def test_service_down_or_503_fails_fast_with_what_to_do(tmp_path):
    model = model_dir(tmp_path, "emb", "BertModel")
    d = start_double(
        model, "emb", "--runner", "pooling", "--convert", "embed", KIT_DOUBLE_HTTP_503="1"
    )
    try:
        plan, _ = make_plan(tmp_path, {"emb": ("embed", d.port), "gone": ("embed", free_port())})
        inp = write_jsonl(tmp_path / "in.jsonl", [embed_req("a", "x")])
        with pytest.raises(NotReadyError, match=r"GET /health answered 503") as info:
            batch(plan, "emb", inp, tmp_path / "o1.jsonl")
        assert "kit up" in str(info.value)
        with pytest.raises(
            NotReadyError, match=r"service 'gone' at http://127.0.0.1:\d+ is not reachable"
        ):
            batch(plan, "gone", inp, tmp_path / "o2.jsonl")
    finally:
        d.stop()


def test_usage_errors_say_what_to_change(tmp_path, stack):
    plan, path = stack
    inp = write_jsonl(tmp_path / "in.jsonl", [embed_req("a", "x")])
    with pytest.raises(KitError, match=r"has no service 'nope' \(services: "):
        prepare_batch(plan, "nope", inp, tmp_path / "o.jsonl")
    with pytest.raises(KitError, match="is the input file"):
        prepare_batch(plan, "emb", inp, inp)
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(KitError, match="has no requests"):
        prepare_batch(plan, "emb", tmp_path / "empty.jsonl", tmp_path / "o.jsonl")
    other = tmp_path / "notes.jsonl"
    other.write_text('{"hello": 1}\n')
    with pytest.raises(KitError, match=r"line 1 has no custom_id.*\n  hint: choose another -o"):
        prepare_batch(plan, "emb", inp, other)
    res = CliRunner().invoke(cli_group(), ["batch", str(path), "emb", str(inp)])
    assert res.exit_code == 2 and "Missing option '-o'" in res.output


# --- tests: retries, against the scriptable server --------------------------------------------


def test_retries_503_and_429_then_success(tmp_path, flaky):
    def behave(path, body, attempt):
        key = body["input"]
        if attempt <= 2 and key.startswith("s"):
            return 503, {"error": {"message": "busy", "code": 503}}, {}, 0
        if attempt <= 3 and key.startswith("r"):
            return 429, {"error": {"message": "slow down", "code": 429}}, {"Retry-After": "0"}, 0
        return ok_answer(body)

    srv, plan = flaky(behave)
    rows = [embed_req(f"c-{k}", k) for k in ("s1", "s2", "r1", "ok1", "ok2")]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    _, summary = batch(plan, "emb", inp, out)
    got = by_id(read_jsonl(out))
    assert all(got[f"c-{k}"]["response"]["body"]["echo"] == k for k in ("s1", "s2", "r1", "ok1"))
    assert all(r["error"] is None for r in got.values())
    assert srv.attempts == {"s1": 3, "s2": 3, "r1": 4, "ok1": 1, "ok2": 1}
    assert summary.retries == 2 + 2 + 3 and summary.done == 5
    assert all(h["content-type"] == "application/json" for h in srv.headers)
    assert all("authorization" not in h for h in srv.headers)


def test_4xx_is_recorded_at_once_never_retried(tmp_path, flaky):
    def behave(path, body, attempt):
        if body["input"] == "bad":
            return 400, {"error": {"message": "input too long", "type": "BadRequestError"}}, {}, 0
        if body["input"] == "missing":
            return 404, {"detail": "Not Found"}, {}, 0
        if body["input"] == "wrong-runner":  # vLLM 0.11: HTTP 200 with an error body (#21704)
            err = {"message": "The model does not support Embeddings API", "code": 400}
            return 200, {"error": {**err, "type": "BadRequestError", "param": None}}, {}, 0
        return ok_answer(body)

    srv, plan = flaky(behave)
    keys = ("bad", "missing", "wrong-runner", "good")
    inp = write_jsonl(tmp_path / "in.jsonl", [embed_req(k, k) for k in keys])
    out = tmp_path / "out.jsonl"
    _, summary = batch(plan, "emb", inp, out)
    got = by_id(read_jsonl(out))
    assert srv.attempts == dict.fromkeys(keys, 1) and summary.retries == 0
    bad = got["bad"]
    assert bad["error"] == {"code": "http_400", "message": "input too long"}
    assert bad["response"]["status_code"] == 400
    assert bad["response"]["body"]["error"]["type"] == "BadRequestError"
    assert got["missing"]["error"] == {"code": "http_404", "message": "Not Found"}
    wrong = got["wrong-runner"]
    assert wrong["error"]["code"] == "http_400" and wrong["response"]["status_code"] == 400
    assert wrong["error"]["message"] == (
        "The model does not support Embeddings API (HTTP 200 with an error body)"
    )
    assert (summary.done, summary.failed, summary.ok) == (1, 3, False)

    # resume: refused lines are kept, not resent; --retry-failed resends them
    _, again = batch(plan, "emb", inp, out)
    assert srv.attempts == dict.fromkeys(keys, 1)
    assert (again.skipped, again.failed_before, again.ok) == (1, 3, False)
    _, again = batch(plan, "emb", inp, out, BatchOptions(retry_failed=True))
    assert srv.attempts == {"bad": 2, "missing": 2, "wrong-runner": 2, "good": 1}
    assert set(by_id(read_jsonl(out))) == set(keys)


def test_exhausted_retries_are_recorded_then_retried_on_resume(tmp_path, flaky):
    healthy = {"on": False}

    def behave(path, body, attempt):
        if body["input"] == "drop" and not healthy["on"]:
            return "drop"
        if body["input"] == "slow" and not healthy["on"]:
            return ok_answer(body, delay=1.0)
        if not healthy["on"]:
            return 502, b"<html>bad gateway</html>", {}, 0
        return ok_answer(body)

    srv, plan = flaky(behave)
    inp = write_jsonl(tmp_path / "in.jsonl", [embed_req(k, k) for k in ("gw", "drop", "slow")])
    out = tmp_path / "out.jsonl"
    opts = BatchOptions(max_retries=2, timeout=0.3, backoff_initial=0.01, backoff_max=0.02)
    _, summary = batch(plan, "emb", inp, out, opts)
    got = by_id(read_jsonl(out))
    assert srv.attempts == {"gw": 3, "drop": 3, "slow": 3}
    assert got["gw"]["error"]["code"] == "http_502"
    assert got["gw"]["response"]["status_code"] == 502
    assert "(after 3 attempts)" in got["gw"]["error"]["message"]
    assert got["drop"]["error"]["code"] == "connection_error" and got["drop"]["response"] is None
    assert got["slow"]["error"]["code"] == "timeout"
    assert "no answer within 0.3s (--timeout)" in got["slow"]["error"]["message"]
    assert summary.failed == 3 and summary.retries == 6

    healthy["on"] = True
    job, summary = batch(plan, "emb", inp, out, opts)
    assert "3 lines that failed with a retryable error are redone" in job.notes
    final = by_id(read_jsonl(out))
    assert all(r["error"] is None for r in final.values()) and len(final) == 3
    assert summary.done == 3 and summary.ok


def test_output_order_follows_completion_but_each_line_keeps_its_custom_id(tmp_path, flaky):
    # the first lines answer slowest: they finish last
    _, plan = flaky(lambda p, body, a: ok_answer(body, delay=(20 - int(body["input"])) * 0.01))
    rows = [embed_req(f"id-{i}", str(i)) for i in range(20)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    batch(plan, "emb", inp, out, BatchOptions(concurrency=20))
    lines = read_jsonl(out)
    order = [r["custom_id"] for r in lines]
    assert order != [r["custom_id"] for r in rows]
    assert order[-1] == "id-0"
    for r in lines:
        assert r["response"]["body"]["echo"] == r["custom_id"].removeprefix("id-")
        assert r["response"]["body"]["model"] == "emb"


def test_concurrency_is_bounded(tmp_path, flaky):
    srv, plan = flaky(lambda p, body, a: ok_answer(body, delay=0.05))
    inp = write_jsonl(tmp_path / "in.jsonl", [embed_req(f"x{i}", str(i)) for i in range(24)])
    batch(plan, "emb", inp, tmp_path / "out.jsonl", BatchOptions(concurrency=3))
    assert srv.max_in_flight == 3 and sum(srv.attempts.values()) == 24


def test_read_output_classifies_and_rewrites_nothing_it_keeps(tmp_path):
    out = tmp_path / "out.jsonl"
    ok = {"custom_id": "a", "response": {"status_code": 200, "body": {}}, "error": None}
    refused = {"custom_id": "b", "response": {"status_code": 400}, "error": {"code": "http_400"}}
    busy = {"custom_id": "c", "response": {"status_code": 503}, "error": {"code": "http_503"}}
    down = {"custom_id": "d", "response": None, "error": {"code": "connection_error"}}
    write_jsonl(out, [ok, refused])
    state = read_output(out)
    assert state.succeeded == {"a"} and state.failed == {"b"} and state.keep is None
    write_jsonl(out, [busy, ok, down, refused, {**ok, "id": "dup"}])
    state = read_output(out)
    assert state.keep == [1, 3] and state.dropped_redo == 2 and state.dropped_duplicates == 1
    assert read_output(out, retry_failed=True).failed == set()


def test_new_summary_counts_before_any_request(tmp_path, stack):
    plan, _ = stack
    inp = write_jsonl(tmp_path / "in.jsonl", [embed_req("a", "x"), "{bad"])
    job = prepare_batch(plan, "emb", inp, tmp_path / "out.jsonl")
    s = new_summary(job)
    assert (s.requests, s.invalid, s.not_run) == (1, 1, 1)


def test_a_second_run_on_the_same_output_is_refused(tmp_path, flaky):
    srv, plan = flaky(lambda p, body, a: ok_answer(body))
    inp = write_jsonl(tmp_path / "in.jsonl", [embed_req("a", "x")])
    out = tmp_path / "out.jsonl"
    with output_lock(out), pytest.raises(KitError, match=f"another kit batch is writing {out}"):
        batch(plan, "emb", inp, out)
    assert not srv.attempts
    batch(plan, "emb", inp, out)
    assert srv.attempts == {"x": 1} and not (tmp_path / ".out.jsonl.lock").exists()

    # prepared, then someone else wrote OUTPUT: refused instead of rewriting a stale view
    write_jsonl(inp, [embed_req("a", "x"), embed_req("b", "y")])
    job = prepare_batch(plan, "emb", inp, out, FAST)
    with out.open("a") as f:
        f.write(json.dumps({"custom_id": "b", "response": {"status_code": 200}, "error": None}))
        f.write("\n")
    with pytest.raises(KitError, match="changed after it was read"):
        run_batch(job)
    assert srv.attempts == {"x": 1}


def test_progress_bar_on_a_terminal_and_plain_lines_elsewhere(monkeypatch):
    import io

    from rich.console import Console

    import kit.cli_batch as cb

    buf = io.StringIO()
    term = cb.BatchProgress(Console(file=buf, force_terminal=True, width=120), "emb (emb)")
    term.start(4)
    for ok in (True, True, False):
        term.advance(ok)
    term.stop()
    text = buf.getvalue()
    assert "emb (emb)" in text and "3/4" in text and "1 failed" in text and "ETA" in text

    monkeypatch.setattr(cb, "HEARTBEAT_S", 0.0)
    buf = io.StringIO()
    plain = cb.BatchProgress(Console(file=buf, force_terminal=False), "emb (emb)")
    plain.start(4)
    plain.advance(True)
    plain.advance(False)
    plain.stop()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and "\x1b" not in buf.getvalue()
    assert "emb (emb): 2/4 (1 failed)" in lines[-1] and "/s, ETA " in lines[-1]

    buf = io.StringIO()
    quiet = cb.BatchProgress(Console(file=buf, force_terminal=True), "x", quiet=True)
    quiet.start(1)
    quiet.advance(True)
    quiet.stop()
    assert buf.getvalue() == ""
