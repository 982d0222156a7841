"""The parts of `kit pull` that need no hub: the `pull:` field, which files vLLM needs,
checksums, the lock file, the token, the progress lines."""

from __future__ import annotations

import hashlib
import io
import subprocess
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from kit import hub_files, hub_lock, hub_source, hub_token
from kit.errors import KitError, StackError
from kit.hub_checksum import Digest, Expected, HashingWriter, verify_file
from kit.hub_client import RemoteFile, access_error
from kit.plan import build_plan
from kit.pull_progress import PullDisplay
from kit.spec import load_stack, parse_stack

BASE = {
    "host": {"gpus": 2, "gpu_memory_gib": 8},
    "defaults": {"image": "vllm/vllm-openai:v0.32.0", "model_root": "/data/models"},
}


def stack_with(services: dict, **defaults) -> str:
    data = {**BASE, "defaults": {**BASE["defaults"], **defaults}, "services": services}
    return yaml.safe_dump(data)


def svc(**kw) -> dict:
    return {"kind": "chat", "model": "org/m", "gpus": [0], "port": 19110, **kw}


# --- the pull: field ---------------------------------------------------------------------


def test_pull_shorthand_and_mapping():
    s = parse_stack(
        stack_with({"a": svc(pull="deepseek-ai/DeepSeek-V3-0324")}), default_name="x.yaml"
    )
    src = s.services["a"].pull
    assert (src.hub, src.repo, src.revision) == (
        "huggingface",
        "deepseek-ai/DeepSeek-V3-0324",
        "main",
    )
    s = parse_stack(
        stack_with(
            {"a": svc(pull={"repo": "Qwen/Qwen3-8B", "revision": "v1.0", "hub": "huggingface"})}
        ),
        default_name="x.yaml",
    )
    assert s.services["a"].pull.revision == "v1.0"
    s = parse_stack(
        stack_with({"a": svc(pull={"repo": "Qwen/Qwen3-8B", "hub": "modelscope"})}),
        default_name="x.yaml",
    )
    assert s.services["a"].pull.revision == "master"  # ModelScope's default branch


@pytest.mark.parametrize(
    "pull, says",
    [
        ("no-slash", "must be a hub id"),
        ("org/../etc", "must be a hub id"),
        ({"repo": "a/b", "revision": "../x"}, "branch, tag or commit"),
        ({"repo": "a/b", "hub": "gitee"}, "should be 'huggingface' or 'modelscope'"),
        ({"repo": "a/b", "token": "x"}, "unknown field"),
    ],
)
def test_bad_pull_fields_are_stack_errors(pull, says):
    with pytest.raises(StackError) as err:
        parse_stack(stack_with({"a": svc(pull=pull)}), default_name="x.yaml")
    assert "service 'a', field 'pull" in str(err.value) and says in str(err.value)


def _plan(tmp_path: Path, services: dict, **defaults):  # type: ignore[no-untyped-def]
    path = tmp_path / "s.yaml"
    path.write_text(stack_with(services, model_root=str(tmp_path / "models"), **defaults))
    return build_plan(load_stack(path))


def test_targets_share_a_folder_and_merge_remote_code(tmp_path):
    plan = _plan(tmp_path, {
        "embed": svc(kind="embed", model="minilm", pull="s/minilm", port=19111),
        "rerank": svc(kind="rerank", model="minilm", pull="s/minilm", gpus=[1], port=19112,
                      trust_remote_code=True),
        "chat": svc(model="local-only", port=19113),
    })  # fmt: skip
    targets, notes = hub_source.targets(plan)
    assert len(targets) == 1
    t = targets[0]
    assert sorted(t.services) == ["embed", "rerank"] and t.remote_code
    assert t.folder == tmp_path / "models/minilm" and t.key == "minilm"
    assert any("chat: no pull: source" in n for n in notes)
    only, _ = hub_source.targets(plan, ["chat"])
    assert only == []


def test_targets_refuse_two_sources_for_one_folder_and_a_hub_service_without_a_cache(tmp_path):
    plan = _plan(tmp_path, {
        "a": svc(model="m", pull="org/one", port=19114),
        "b": svc(kind="embed", model="m", pull="org/two", gpus=[1], port=19115),
    })  # fmt: skip
    with pytest.raises(KitError, match=r"share the model folder .* different pull: sources"):
        hub_source.targets(plan)
    # a hub service is pulled into the HF cache the container mounts: it must be a host folder
    plan = _plan(tmp_path, {"a": svc(model="org/m", model_source="hub", pull="org/m")})
    with pytest.raises(KitError, match=r"set defaults\.cache\.hf to a host folder"):
        hub_source.targets(plan)
    with pytest.raises(KitError, match="has no service 'zzz'"):
        hub_source.targets(plan, ["zzz"])


def test_endpoint_is_the_stacks_mirror(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    plan = _plan(tmp_path, {"a": svc(pull="o/m")}, hf_endpoint="https://hf-mirror.com/")
    assert hub_source.endpoint(plan, "huggingface") == "https://hf-mirror.com"
    plan = _plan(tmp_path, {"a": svc(pull="o/m")})
    assert hub_source.endpoint(plan, "huggingface") == "https://huggingface.co"
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:19199/")
    assert hub_source.endpoint(plan, "huggingface") == "http://127.0.0.1:19199"


def test_token_comes_from_the_env_file_and_is_never_shown(tmp_path):
    secret = "hf_abcdefghijklmnopqrstuvwxyz"
    (tmp_path / "k.env").write_text(f'VLLM_API_KEY=x\nHUGGING_FACE_HUB_TOKEN="{secret}"\n')
    plan = _plan(tmp_path, {"a": svc(pull="o/m")}, api_key_env_file="k.env")
    tok = hub_source.token(plan, "huggingface")
    assert tok.value == secret and tok.variable == "HUGGING_FACE_HUB_TOKEN"
    assert secret not in repr(tok) and secret not in str(tok)
    err = access_error("huggingface", "https://hf.co", "o/m", 403, tok, gated=True)
    assert secret not in str(err) and "HUGGING_FACE_HUB_TOKEN" in str(err)
    plan = _plan(tmp_path, {"a": svc(pull="o/m")})
    tok = hub_source.token(plan, "huggingface")
    assert tok.value is None and "set defaults.api_key_env_file" in hub_token.token_hint(tok)


# --- which files -------------------------------------------------------------------------


def test_select_takes_safetensors_and_leaves_duplicates():
    repo = [
        "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "chat_template.jinja", "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors", "model.safetensors.index.json",
        "pytorch_model-00001-of-00002.bin", "pytorch_model.bin.index.json", "model.onnx",
        "onnx/model.onnx", "original/consolidated.00.pth", "gguf/model-q4.gguf", "README.md",
        ".gitattributes", "LICENSE", "configuration_x.py", "modeling_x.py",
        "consolidated.safetensors", "flax_model.msgpack",
    ]  # fmt: skip
    sel = hub_files.select(repo, remote_code=False)
    assert sel.weight_format == "safetensors"
    assert set(sel.wanted) == {
        "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "chat_template.jinja", "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors", "model.safetensors.index.json",
    }  # fmt: skip
    dup = set(sel.skipped["duplicate weight formats"])
    assert {"pytorch_model-00001-of-00002.bin", "consolidated.safetensors", "onnx/model.onnx",
            "original/consolidated.00.pth", "gguf/model-q4.gguf", "flax_model.msgpack"} <= dup  # fmt: skip
    assert set(sel.skipped["custom code (trust_remote_code is off)"]) == {
        "configuration_x.py", "modeling_x.py"
    }  # fmt: skip
    with_code = hub_files.select(repo, remote_code=True)
    assert "modeling_x.py" in with_code.wanted


def test_select_falls_back_to_pytorch_and_keeps_sentence_transformers_modules():
    sel = hub_files.select(
        ["config.json", "pytorch_model.bin", "vocab.txt", "modules.json", "1_Pooling/config.json",
         "2_Dense/model.safetensors", "2_Dense/config.json", "tf_model.h5"],
        remote_code=False,
    )  # fmt: skip
    assert sel.weight_format == "pytorch"
    assert set(sel.wanted) == {"config.json", "pytorch_model.bin", "vocab.txt", "modules.json",
                               "1_Pooling/config.json", "2_Dense/model.safetensors",
                               "2_Dense/config.json"}  # fmt: skip
    assert (
        hub_files.select(["config.json", "model.gguf"], remote_code=False).weight_format == "none"
    )


# --- checksums -----------------------------------------------------------------------------


def test_git_object_id_is_what_git_computes(tmp_path):
    f = tmp_path / "config.json"
    f.write_bytes(b'{"a": 1}\n' * 1000)
    git = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True)
    exp = Expected(f.stat().st_size, git_oid=git.stdout.strip())
    assert verify_file(f, exp)
    assert verify_file(f, Expected(exp.size, sha256=hashlib.sha256(f.read_bytes()).hexdigest()))
    f.write_bytes(b'{"a": 2}\n' * 1000)  # same size, other bytes
    assert not verify_file(f, exp)
    with pytest.raises(ValueError):
        Expected(3)


def test_hashing_writer_resumes_and_restarts():
    data = bytes(range(256)) * 100
    exp = Expected(len(data), sha256=hashlib.sha256(data).hexdigest())
    buf = io.BytesIO(data[:1000])
    seen = []
    w = HashingWriter(buf, Digest(exp), seen.append)
    assert w.prime() == 1000
    w.write(data[1000:])
    assert w.digest.matches() and sum(seen) == len(data) - 1000
    # a server that ignores Range: the client rewinds and truncates, the hash restarts
    buf = io.BytesIO(data[:500])
    w = HashingWriter(buf, Digest(exp))
    w.prime()
    w.seek(0)
    w.truncate()
    w.write(data)
    assert w.digest.matches() and buf.getvalue() == data


# --- the lock file -------------------------------------------------------------------------


def test_lock_round_trip_is_stable(tmp_path):
    assert hub_lock.lock_path("stacks/source-notes.yaml") == Path("stacks/source-notes.lock.json")
    models = {
        "b": hub_lock.LockedModel(
            hub_source.PullSource(repo="o/b"), "c" * 40,
            (RemoteFile("m.safetensors", Expected(9, sha256="b" * 64, git_oid="d" * 40), lfs=True),
             RemoteFile("z.json", Expected(3, git_oid="a" * 40))),
        ),
        "a": hub_lock.LockedModel(hub_source.PullSource(repo="o/a", revision="v2"), "e" * 40,
                                  (RemoteFile("c.json", Expected(1, git_oid="f" * 40)),)),
    }  # fmt: skip
    path = tmp_path / "s.lock.json"
    hub_lock.write(path, "s.yaml", models)
    text = path.read_text()
    back = hub_lock.read(path)
    assert back == {k: models[k] for k in ("a", "b")}
    hub_lock.write(path, "s.yaml", back)
    assert path.read_text() == text
    assert text.index('"a"') < text.index('"b"') and text.index("m.safetensors") < text.index(
        "z.json"
    )
    path.write_text("{not json")
    with pytest.raises(KitError, match="cannot be read"):
        hub_lock.read(path)


# --- progress lines ------------------------------------------------------------------------


def test_progress_lines_in_logs_name_file_offset_rate_and_eta():
    out = io.StringIO()
    now = [0.0]
    d = PullDisplay(Console(file=out, width=200), clock=lambda: now[0])
    d.start(100 * 1024**2, 2)
    d.file_start("m/a.safetensors", 60 * 1024**2, 20 * 1024**2)
    now[0] = 11.0
    d.advance("m/a.safetensors", 40 * 1024**2)
    d.file_done("m/a.safetensors", 60 * 1024**2, 40 * 1024**2, 10.0)
    d.file_retry("m/b.json", "checksum mismatch")
    d.finish()
    text = out.getvalue()
    assert "downloading 2 files, 100.0 MiB" in text
    assert "get   m/a.safetensors (60.0 MiB, resuming at 20.0 MiB)" in text
    assert "overall 40.0 MiB of 100.0 MiB (40.0%), 3.6 MiB/s, ETA 16s" in text
    assert (
        "ok    m/a.safetensors (60.0 MiB, 40.0 MiB in 10.0s, 4.0 MiB/s, checksum verified)" in text
    )
    assert "retry m/b.json: checksum mismatch" in text
