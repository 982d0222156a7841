"""kit.wire: SSE splitting, error classification, auth header, byte-level field search."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kit import wire

# --- SSE --------------------------------------------------------------------------------------


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    """Feed ``stream`` cut at ``cuts`` (positions), then close."""
    sse = wire.SSESplitter()
    out: list[bytes] = []
    prev = 0
    for c in [*sorted(cuts), len(stream)]:
        out += sse.feed(stream[prev:c])
        prev = c
    return out + sse.close()


def every_cut(stream: bytes) -> list[list[bytes]]:
    """The events for the stream cut in two at every position, and fed byte by byte."""
    results = [split(stream, [i]) for i in range(len(stream) + 1)]
    results.append(split(stream, list(range(len(stream)))))
    return results


VLLM_STYLE = (
    b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
    b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
    b"data: [DONE]\n\n"
)


def test_plain_vllm_stream_at_every_cut():
    want = [ev[6:] for ev in VLLM_STYLE.split(b"\n\n") if ev]
    for got in every_cut(VLLM_STYLE):
        assert got == want


def test_crlf_cr_no_space_comments_and_other_fields():
    stream = (
        b": keep-alive comment\r\n\r\n"
        b"event: message\r\nid: 7\r\nretry: 100\r\n"
        b'data:{"content": "a"}\r\n\r\n'  # no space after data:
        b'data:  {"content": "b"}\r\r'  # CR line ends; a second space is kept
        b"data\n\n"  # a data line without a colon: an empty payload
        b"id: 9\n\n"  # an event without data yields nothing
        b"data: [DONE]\r\n\r\n"
    )
    want = [b'{"content": "a"}', b' {"content": "b"}', b"", b"[DONE]"]
    for got in every_cut(stream):
        assert got == want


def test_multi_line_event_is_joined_with_newlines():
    obj = {"choices": [{"delta": {"content": "x y"}}], "usage": None}
    pretty = json.dumps(obj, indent=2).splitlines()
    stream = b"".join(b"data: " + line.encode() + b"\r\n" for line in pretty) + b"\r\n"
    stream += b"data: [DONE]\n\n"
    for got in every_cut(stream):
        assert len(got) == 2 and got[1] == b"[DONE]"
        assert json.loads(got[0]) == obj
        assert wire.carries_output(got[0])


def test_end_of_stream_without_the_last_blank_line():
    assert split(b'data: {"a": 1}\n\ndata: [DONE]\n', []) == [b'{"a": 1}', b"[DONE]"]
    assert split(b"data: [DONE]\r", []) == [b"[DONE]"]
    # a line cut off without its line end is dropped, not delivered half
    assert split(b'data: {"a": 1}\n\ndata: {"choices": [{"delta"', []) == [b'{"a": 1}']
    assert wire.SSESplitter().close() == []


def test_held_bytes_are_only_the_unfinished_event():
    sse = wire.SSESplitter()
    assert sse.feed(b'data: {"x": 1}\n\ndata: {"y"') == [b'{"x": 1}']
    assert sse.pending == len(b'data: {"y"')
    assert sse.feed(b": 2}\n") == [] and sse.feed(b"\n") == [b'{"y": 2}']
    assert sse.pending == 0


@given(
    payloads=st.lists(
        st.text(
            alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
            max_size=20,
        ),
        max_size=6,
    ),
    ending=st.sampled_from(["\n", "\r\n", "\r"]),
    space=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_any_payloads_any_line_ends_any_cuts(payloads, ending, space, seed):
    sep = "data: " if space else "data:"
    text = "".join(f"{sep}{p}{ending}{ending}" for p in payloads)
    stream = text.encode()
    rng = random.Random(seed)
    cuts = rng.sample(range(len(stream) + 1), k=min(len(stream) + 1, rng.randint(0, 8)))
    want = [(p if space or not p.startswith(" ") else p[1:]).encode() for p in payloads]
    assert split(stream, cuts) == want


# --- output and usage fields, however the JSON is spaced --------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b'{"choices":[{"delta":{"content":"x"}}]}',
        b'{"choices": [{"delta": {"content": "x"}}]}',
        b'{"choices" : [ { "delta" : { "content" :\t"x" } } ] }',
        b'{\n  "choices": [\n    {"delta": {"reasoning_content":\n "x"}}\n  ]\n}',
        b'{"choices": [{"delta": {"reasoning": "x"}}]}',
        b'{"choices": [{"text": " tok0", "index": 0}]}',
        b'{"choices": [{"delta": {"content": "\\"quoted\\""}}]}',
    ],
)
def test_output_found_in_any_json_spacing(payload):
    json.loads(payload)  # every case is valid JSON
    assert wire.carries_output(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"choices": [{"delta": {"role": "assistant", "content": ""}}]}',
        b'{"choices": [{"delta": {"content": null}}]}',
        b'{"choices": [], "usage": {"completion_tokens": 16}}',
        b'{"choices": [{"delta": {}, "logprobs": {"content": [{"token": "a"}]}}]}',
        b'{"choices": [{"delta": {"tool_calls": [{"function": {"arguments": "{\\"content\\": \\"x\\"}"}}]}}]}',
        b"[DONE]",
    ],
)
def test_no_output_in_empty_null_usage_and_nested_strings(payload):
    assert not wire.carries_output(payload)


def test_usage_and_integers_in_any_spacing():
    compact = b'{"usage":{"prompt_tokens":8,"completion_tokens":16}}'
    spaced = b'{"usage" : {\n "prompt_tokens": 8,\n "completion_tokens" :16 } }'
    for blob in (compact, spaced):
        assert wire.has_usage(blob)
        assert wire.int_field(blob, "prompt_tokens") == 8
        assert wire.int_field(blob, "completion_tokens") == 16
        assert wire.int_field(blob, "total_tokens") is None
    assert not wire.has_usage(b'{"usage": null}')


# --- errors -----------------------------------------------------------------------------------


def test_http_error_statuses_with_each_body_shape():
    nested = {"error": {"message": "model 'x' not found", "type": "NotFoundError", "code": 404}}
    e = wire.classify(404, nested, json.dumps(nested))
    assert e is not None and (e.code, e.message, e.in_body) == (404, "model 'x' not found", False)
    assert str(e) == "HTTP 404: model 'x' not found"
    flat = wire.classify(400, {"object": "error", "message": "bad", "code": 400})
    assert flat is not None and flat.message == "bad"
    assert wire.classify(422, {"detail": [{"loc": ["body"]}]}).message == "[{'loc': ['body']}]"
    text = wire.classify(502, None, "<html>Bad Gateway</html>")
    assert text is not None and text.message == "<html>Bad Gateway</html>"
    assert wire.classify(503, None, "").message == "(empty body)"


def test_http_200_error_bodies_are_errors():
    # vLLM 0.11 answers chat on a pooling model with HTTP 200 and its ErrorResponse
    vllm011 = {
        "object": "error",
        "message": "The model does not support Chat Completions API",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    e = wire.classify(200, vllm011)
    assert e is not None and e.in_body and (e.code, e.http_status) == (400, 200)
    assert str(e) == (
        "HTTP 200 with an error body (code 400): The model does not support Chat Completions API"
    )
    newer = wire.classify(200, {"error": {"message": "boom", "code": 503}})
    assert newer is not None and newer.code == 503
    odd = wire.classify(200, {"error": {"message": "m", "code": "not a number"}})
    assert odd is not None and odd.code == 400
    assert wire.classify(200, {"error": "quota exceeded"}).message == "quota exceeded"


def test_real_answers_are_not_errors():
    assert wire.classify(200, {"object": "list", "data": []}) is None
    assert wire.classify(200, {"choices": [], "error": None}) is None
    assert wire.classify(200, None, "plain text") is None
    # the word "error" inside a real answer's text is not an error body
    raw = json.dumps({"choices": [{"message": {"content": 'say "error'}}]}).encode()
    assert b'"error"' in raw  # the byte pre-check hits; the parsed answer is no error
    assert wire.raw_error(200, raw) is None


def test_raw_error_parses_bytes_any_spacing():
    body = b'{ "object" : "error", "message" : "no", "code" : 400 }'
    e = wire.raw_error(200, body)
    assert e is not None and (e.code, e.message, e.in_body) == (400, "no", True)
    assert wire.raw_error(200, b'{"object":"list"}') is None
    e = wire.raw_error(500, b"Internal Server Error")
    assert e is not None and (e.code, e.message) == (500, "Internal Server Error")
    assert wire.raw_error(401, b"\xff\xfe").code == 401


def test_error_events_in_a_stream():
    e = wire.sse_error(b'{"error": {"object": "error", "message": "engine died", "code": 500}}')
    assert e is not None and (e.code, e.message) == (500, "engine died")
    assert wire.sse_error(b'{"choices":[{"delta":{"content":"error"}}]}') is None
    assert wire.sse_error(b"[DONE]") is None


# --- headers, paths, reasoning fields ---------------------------------------------------------


def test_auth_header():
    assert wire.auth_header("sk-1") == {"Authorization": "Bearer sk-1"}
    assert wire.auth_header(None) == {} and wire.auth_header("") == {}
    h = wire.json_headers("k")
    assert h == {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "Authorization": "Bearer k",
    }
    assert "Content-Type" not in wire.json_headers(None, body=False)


def test_paths_and_apis():
    assert wire.API_PATHS["chat"] == wire.CHAT == "/v1/chat/completions"
    assert wire.API_PATHS["embeddings"] == "/v1/embeddings"
    assert set(wire.GENERATION_APIS) <= set(wire.API_PATHS)


def test_reasoning_fields_follow_the_version_table():
    assert wire.reasoning_fields("0.11.0") == ("reasoning_content",)
    assert set(wire.reasoning_fields("0.12.0")) == {"reasoning", "reasoning_content"}
    assert wire.reasoning_fields("0.16.0") == ("reasoning",)
    assert wire.reasoning_fields() == ("reasoning", "reasoning_content")
    assert {"content", "reasoning", "reasoning_content", "text"} == set(wire.OUTPUT_FIELDS)


def test_import_is_light():
    code = "import sys, kit.wire; print(sorted({'aiohttp', 'rich', 'kit.plan'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
