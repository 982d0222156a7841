"""kit bench: workloads, metrics as vllm bench serve defines them, and real load over HTTP
against the engine double running on the host."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from doubleutil import Double, double_env, write_model
from kit import loadgen
from kit.bench import BenchOptions, parse_mix, parse_pairs, run_bench
from kit.cli import cli
from kit.errors import KitError
from kit.loadgen import Record
from kit.metrics import summarize
from kit.plan import build_plan
from kit.spec import load_stack
from kit.workload import WorkloadSpec, build
from stackutil import deploy_record

# --- workloads -------------------------------------------------------------------------------


def test_synthetic_chat_bodies():
    wl = build(WorkloadSpec(api="chat", prompt_tokens=12, max_tokens=7, stop=("</s>",)), "m", 5)
    assert wl.path == "/v1/chat/completions" and wl.stream
    body = json.loads(wl.body(3))
    assert body["model"] == "m" and body["max_tokens"] == 7 and body["stop"] == ["</s>"]
    assert len(body["messages"][0]["content"].split()) == 12
    assert body["stream_options"] == {"include_usage": True}
    assert wl.body(0) == wl.body(5), "prompts cycle when there are fewer than requests"


def test_openqa_and_messages_datasets(tmp_path):
    qa = tmp_path / "open_qa.jsonl"
    qa.write_text('{"question": "甲乙两班共有学生98人？"}\n\n{"question": "' + "x" * 50 + '"}\n')
    wl = build(
        WorkloadSpec(api="chat", dataset="openqa", dataset_path=qa, max_prompt_length=20), "m", 10
    )
    assert len(wl.bodies) == 1 and "98" in json.loads(wl.bodies[0])["messages"][0]["content"]
    msgs = tmp_path / "m.jsonl"
    msgs.write_text(
        json.dumps(
            {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}
        )
        + "\n"
    )
    wl = build(WorkloadSpec(api="completions", dataset="messages", dataset_path=msgs), "m", 1)
    assert json.loads(wl.bodies[0])["prompt"] == "s\nu"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"question": 1}\n', ":1: openqa lines need a 'question' string"),
        ("not json\n", ":1: not JSON"),
        ("", "has no lines"),
    ],
)
def test_dataset_errors_name_the_line(tmp_path, text, needle):
    p = tmp_path / "d.jsonl"
    p.write_text(text)
    with pytest.raises(KitError, match=needle):
        build(WorkloadSpec(api="chat", dataset="openqa", dataset_path=p), "m", 1)


def test_embed_and_rerank_bodies():
    emb = json.loads(build(WorkloadSpec(api="embeddings"), "e", 1).bodies[0])
    assert isinstance(emb["input"], str) and "stream" not in emb
    rr = json.loads(build(WorkloadSpec(api="rerank", documents=5), "r", 1).bodies[0])
    assert len(rr["documents"]) == 5 and rr["query"]


def test_pairs_and_mix(stack_file):
    assert parse_pairs((1, 8), (10, 80)) == ((1, 10), (8, 80))
    assert parse_pairs((4,), (10, 20)) == ((4, 10), (4, 20))
    with pytest.raises(KitError, match="same count"):
        parse_pairs((1, 2), (1, 2, 3))
    plan = build_plan(load_stack(stack_file(services={
        "llm": {"kind": "chat", "model": "m", "gpus": [0], "port": 1},
        "emb": {"kind": "embed", "model": "e", "gpus": [1], "port": 2},
    })))  # fmt: skip
    assert parse_mix("chat=8,emb=4", plan) == {"llm": 8, "emb": 4}
    with pytest.raises(KitError, match="no service or kind 'rerank'"):
        parse_mix("rerank=2", plan)
    with pytest.raises(KitError, match="NAME=PARALLEL"):
        parse_mix("chat", plan)


# --- metrics ---------------------------------------------------------------------------------


def rec(i, *, ttft, e2e, tokens, itl=(), ok=True, warmup=False, source="usage"):
    return Record(index=i, start=0.0, ok=ok, status=200 if ok else 500, e2e=e2e, ttft=ttft,
                  itl=list(itl), output_tokens=tokens, prompt_tokens=10, count_source=source,
                  error=None if ok else "HTTP 500: boom", warmup=warmup)  # fmt: skip


def test_metrics_follow_vllm_definitions():
    records = [
        rec(0, ttft=0.1, e2e=0.5, tokens=5, itl=[0.1, 0.1, 0.1, 0.1]),
        rec(1, ttft=0.3, e2e=0.7, tokens=3, itl=[0.2, 0.2]),
        rec(2, ttft=9.0, e2e=9.0, tokens=1, ok=False),  # failed: excluded
        rec(3, ttft=5.0, e2e=5.0, tokens=100, warmup=True),  # warm-up: excluded
    ]
    s = summarize(records, duration=2.0, kind="chat")
    assert (s["requests"], s["completed"], s["failed"]) == (3, 2, 1)
    assert s["failure_rate"] == pytest.approx(1 / 3)
    assert s["ttft_ms"]["mean"] == pytest.approx(200.0)
    # TPOT = (E2E - TTFT) / (tokens - 1): 0.4/4 = 100 ms and 0.4/2 = 200 ms
    assert s["tpot_ms"]["mean"] == pytest.approx(150.0)
    assert s["itl_ms"]["p50"] == pytest.approx(100.0)
    assert s["request_throughput"] == pytest.approx(1.0)
    assert s["output_throughput"] == pytest.approx(4.0)
    assert s["total_token_throughput"] == pytest.approx(14.0)
    assert s["token_count_source"] == "usage (server-reported)"


def test_pooling_metrics():
    s = summarize([rec(0, ttft=None, e2e=0.02, tokens=None, source="usage")], 0.5, "embed")
    assert s["input_token_throughput"] == pytest.approx(20.0)
    assert "ttft_ms" not in s


# --- real load -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def doubles(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    gen = Double(write_model(tmp, "gen"), "--served-model-name", "g",
                 env=double_env(KIT_DOUBLE_TOKEN_DELAY_MS="4"))  # fmt: skip
    emb = Double(write_model(tmp, "emb", architectures=["BertModel"]), "--served-model-name", "e",
                 "--runner", "pooling", "--convert", "embed")  # fmt: skip
    bad = Double(
        write_model(tmp, "bad"), "--served-model-name", "b", env=double_env(KIT_DOUBLE_HTTP_503="1")
    )
    try:
        for d in (gen, emb, bad):
            d.wait_ready()
        stack = {
            "host": {"gpus": 8, "gpu_memory_gib": 80},
            "defaults": {"image": "x/y:1", "vllm_version": "0.11.0"},
            "services": {
                "llm": {"kind": "chat", "model": "g", "model_source": "hub", "served_name": "g", "gpus": [0], "port": gen.port},
                "emb": {"kind": "embed", "model": "e", "model_source": "hub", "served_name": "e", "gpus": [1], "port": emb.port},
                "bad": {"kind": "chat", "model": "b", "model_source": "hub", "served_name": "b", "gpus": [2], "port": bad.port},
            },
        }  # fmt: skip
        path = tmp / "bench.yaml"
        path.write_text(yaml.safe_dump(stack))
        with pytest.MonkeyPatch.context() as mp:  # records of this module in their own folder
            mp.setenv("KIT_STATE_DIR", str(tmp / "state"))
            deploy_record(path)
            yield path
    finally:
        for d in (gen, emb, bad):
            d.stop()


def test_streamed_chat_timings_are_real(doubles, tmp_path):
    plan = build_plan(load_stack(doubles))
    opts = BenchOptions(pairs=((4, 12),), warmup=2, results_dir=tmp_path,
                        workload=WorkloadSpec(api="chat", max_tokens=6, prompt_tokens=5))  # fmt: skip
    res = run_bench(plan, "llm", opts)
    (run,) = res.runs
    s = run.summary
    assert (s["completed"], s["failed"]) == (12, 0)
    # the double waits 4 ms between tokens: ITL and TPOT measure that gap, TTFT the first
    assert 3.0 < s["itl_ms"]["p50"] < 40.0
    assert 3.0 < s["tpot_ms"]["mean"] < 40.0
    assert s["output_tokens"] == 12 * 6 and s["token_count_source"].startswith("usage")
    lines = (res.folder / "requests.jsonl").read_text().splitlines()
    assert len(lines) == 14 and sum(json.loads(x)["warmup"] for x in lines) == 2
    for png in ("latency.png", "throughput.png"):
        assert (res.folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    args = json.loads((res.folder / "args.json").read_text())
    assert args["pairs"] == [[4, 12]] and args["warmup"] == 2


async def _load(port, spec, *, number, parallel, model="m"):
    """``number`` requests of ``spec`` at ``parallel`` to 127.0.0.1:``port``: (records, duration)."""
    async with loadgen.session(10) as sess:
        wl = build(spec, model, number)
        target = loadgen.Target("t", f"http://127.0.0.1:{port}", model)
        return await loadgen.run(sess, target, wl, parallel=parallel, number=number)


async def _read_request(reader):
    """Read one HTTP/1.1 request with its body, as loadgen sends it."""
    head = await reader.readuntil(b"\r\n\r\n")
    n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    await reader.readexactly(n)


def test_http_200_error_body_is_a_failure(doubles):
    """Embeddings sent to a generating model: vLLM 0.11 answers HTTP 200 with an error body."""
    port = build_plan(load_stack(doubles)).service("llm").port
    spec = WorkloadSpec(api="embeddings")
    records, _ = asyncio.run(_load(port, spec, number=2, parallel=2, model="g"))
    for r in records:
        assert not r.ok and r.status == 200
        assert r.error.startswith("HTTP 200 with an error body (code 400): {")
        assert "does not support Embeddings API" in r.error


def test_concurrency_never_exceeds_parallel():
    """A test server counts requests in flight; the generator must cap them at --parallel."""
    seen = {"now": 0, "max": 0}

    async def handle(reader, writer):
        while True:
            await _read_request(reader)
            seen["now"] += 1
            seen["max"] = max(seen["max"], seen["now"])
            await asyncio.sleep(0.01)
            seen["now"] -= 1
            body = b'{"data":[{"embedding":[1.0]}],"usage":{"prompt_tokens":3,"total_tokens":3}}'
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        out = await _load(port, WorkloadSpec(api="embeddings"), number=40, parallel=5)
        server.close()
        return out

    records, duration = asyncio.run(main())
    assert all(r.ok for r in records) and len(records) == 40
    assert seen["max"] == 5
    assert duration >= 40 / 5 * 0.01


def test_poisson_rate_spreads_arrivals():
    arrivals = loadgen._arrivals(2000, 100.0, seed=1)
    assert arrivals[0] == 0
    assert 2000 / 100 * 0.9 < arrivals[-1] < 2000 / 100 * 1.1


def test_cli_failures_counted_printed_and_exit_nonzero(doubles, tmp_path):
    res = CliRunner().invoke(
        cli, ["bench", str(doubles), "bad", "-p", "2", "-n", "6", "--results", str(tmp_path)]
    )
    assert res.exit_code == 6, res.output
    assert "0 / 6" in res.output  # ok / failed row
    assert "HTTP 503" in res.output  # the first error body is printed
    assert "failure rate 100.00%" in res.stderr
    summary = json.loads(next(tmp_path.rglob("summary.json")).read_text())
    assert summary["runs"][0]["failed"] == 6
    ok = CliRunner().invoke(cli, ["bench", str(doubles), "bad", "-p", "2", "-n", "4", "--results",
                                  str(tmp_path), "--max-failure-rate", "1", "--no-plots"])  # fmt: skip
    assert ok.exit_code == 0


def test_cli_sweep_and_mix(doubles, tmp_path):
    res = CliRunner().invoke(cli, ["bench", str(doubles), "llm", "-p", "1,4", "-n", "4,8", "--max-tokens", "3",
                                   "--results", str(tmp_path), "--no-plots"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "p1-n4" in res.output and "p4-n8" in res.output
    res = CliRunner().invoke(cli, ["bench", str(doubles), "--mix", "llm=2,embed=3", "-n", "9", "--baseline",
                                   "--max-tokens", "3", "--results", str(tmp_path / "mix")])  # fmt: skip
    assert res.exit_code == 0, res.output
    for label in ("alone:llm", "alone:emb", "mix:llm", "mix:emb"):
        assert label in res.output
    summary = json.loads(next(Path(tmp_path / "mix").rglob("summary.json")).read_text())
    assert [r["label"] for r in summary["runs"]] == ["alone:llm", "alone:emb", "mix:llm", "mix:emb"]
    emb = next(r for r in summary["runs"] if r["label"] == "mix:emb")
    assert emb["completed"] == 9 and emb["input_tokens"] > 0


# --- SSE as other OpenAI-compatible servers format it ----------------------------------------


def _spaced_events(tokens: int, *, usage: bool, field: str = "content") -> list[bytes]:
    """Chat chunks as json.dumps formats them by default (``"content": "x"``), CRLF line ends,
    a comment and a role chunk first: what several servers and gateways send."""
    head = {"id": "c", "object": "chat.completion.chunk", "model": "m"}
    out = [b": ping\r\n\r\n"]
    first = {**head, "choices": [{"index": 0, "delta": {"role": "assistant", field: ""}}]}
    out.append(b"data: " + json.dumps(first).encode() + b"\r\n\r\n")
    for i in range(tokens):
        obj = {**head, "choices": [{"index": 0, "delta": {field: f" t{i}"}}]}
        out.append(b"data: " + json.dumps(obj).encode() + b"\r\n\r\n")
    if usage:
        u = {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": 5 + tokens}
        out.append(
            b"data: " + json.dumps({**head, "choices": [], "usage": u}).encode() + b"\r\n\r\n"
        )
    out.append(b"data: [DONE]\r\n\r\n")
    return out


def _serve_sse(events: list[bytes], gap_s: float = 0.003):
    """A local HTTP/1.1 server that streams ``events`` chunked, each cut in two mid-event and
    sent ``gap_s`` apart, to every request. Returns the async server factory."""

    async def handle(reader, writer):
        try:
            while True:
                await _read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"transfer-encoding: chunked\r\n\r\n")  # fmt: skip
                for ev in events:
                    for part in (ev[: len(ev) // 2], ev[len(ev) // 2 :]):
                        writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                        await writer.drain()
                        await asyncio.sleep(gap_s / 2)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return handle


def _run_against(events: list[bytes], number: int = 6, parallel: int = 3) -> list[Record]:
    async def main():
        server = await asyncio.start_server(_serve_sse(events), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        spec = WorkloadSpec(api="chat", max_tokens=4)
        records, _ = await _load(port, spec, number=number, parallel=parallel)
        server.close()
        return records

    return asyncio.run(main())


def test_sse_with_spaces_after_colons_is_timed():
    """``"content": "x"`` (spaces), CRLF, comments, events cut mid-way: every output chunk is
    found, TTFT and ITL measured, tokens taken from the spaced usage chunk."""
    records = _run_against(_spaced_events(4, usage=True))
    assert [r.error for r in records] == [None] * 6
    for r in records:
        assert r.ok and r.ttft is not None and r.ttft > 0
        assert len(r.itl) == 3  # 4 output chunks, 3 gaps
        assert (r.output_tokens, r.prompt_tokens, r.count_source) == (4, 5, "usage")


def test_sse_with_spaces_and_no_usage_counts_chunks():
    records = _run_against(_spaced_events(5, usage=False, field="reasoning_content"))
    assert all(r.ok and r.output_tokens == 5 and r.count_source == "chunks" for r in records)


def test_stream_without_output_says_what_it_saw():
    records = _run_against(_spaced_events(3, usage=True, field="contents"), number=2)
    (err,) = {r.error for r in records}
    assert not any(r.ok for r in records)
    assert err.startswith("no output field (content/reasoning/reasoning_content/text) in 6 events")
    assert '"contents": ""' in err  # the first event, as sent


def test_error_event_in_a_spaced_stream_fails_the_request():
    bad = b'data: {"error": {"object": "error", "message": "engine died", "code": 500}}\r\n\r\n'
    events = _spaced_events(2, usage=False)
    records = _run_against([*events[:3], bad, events[-1]], number=2)
    for r in records:
        assert not r.ok
        assert r.error.startswith("error event in stream (code 500): ")
        assert "engine died" in r.error


def test_bench_run_against_a_spaced_sse_server(stack_file, tmp_path):
    """The whole `kit bench` run (plan, workload, loadgen, summary) on such a server."""
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        asyncio.start_server(_serve_sse(_spaced_events(4, usage=True)), "127.0.0.1", 0)
    )
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        plan = build_plan(load_stack(stack_file(services={
            "llm": {"kind": "chat", "model": "m", "model_source": "hub", "served_name": "m",
                    "gpus": [0], "port": port},
        })))  # fmt: skip
        opts = BenchOptions(pairs=((2, 8),), results_dir=tmp_path, plots=False)
        (run,) = run_bench(plan, "llm", opts).runs
        s = run.summary
        assert (s["completed"], s["failed"], s["output_tokens"]) == (8, 0, 32)
        assert s["token_count_source"].startswith("usage")
        assert s["itl_ms"] is not None and s["ttft_ms"] is not None
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
