"""`kit pull` with the REAL `huggingface_hub` client against a local DOUBLE of the hub's HTTP API
(tests/hubdouble.py; no hub is reachable here), through the stack's `hf_endpoint` mirror setting.

The repositories are small model folders made here (config, tokenizer, a safetensors file, plus
files vLLM does not need); the real-engine tier pulls the real model folders and serves them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hubdouble import HubDouble

from kit import hub_lock
from kit.cli import cli
from kit.errors import KitError
from kit.hub_client import ChecksumMismatch, HubAccessError, HubError
from kit.plan import build_plan
from kit.pull import DiskSpaceError, PullOptions, run, staging_dir
from kit.spec import load_stack

REPO_ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


def safetensors(n_floats: int, seed: int = 0) -> bytes:
    """A valid safetensors file with one F32 tensor of ``n_floats`` values."""
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]}}
    ).encode()
    header += b" " * (-len(header) % 8)
    pattern = bytes((i * 31 + seed) % 251 for i in range(251))
    body = (pattern * (4 * n_floats // 251 + 1))[: 4 * n_floats]
    return len(header).to_bytes(8, "little") + header + body


def model_files(weights_mib: float = 1, seed: int = 0, **extra: bytes) -> dict[str, bytes]:
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "max_position_embeddings": 2048,
        "torch_dtype": "float32",
        "vocab_size": 100,
    }
    files = {
        "config.json": json.dumps(cfg).encode(),
        "tokenizer.json": json.dumps({"model": {"vocab": {"a": 0}}, "seed": seed}).encode(),
        "tokenizer_config.json": b'{"model_max_length": 2048}',
        "model.safetensors": safetensors(int(weights_mib * MIB / 4), seed),
        # not for vLLM: a duplicate weight format, another runtime's export, docs, custom code
        "pytorch_model.bin": b"\x80\x02" + bytes(4096),
        "onnx/model.onnx": bytes(2048),
        "README.md": b"# a model\n",
        "modeling_custom.py": b"class Model: pass\n",
    }
    files.update(extra)
    return files


WANTED = ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors")


@pytest.fixture
def hub():
    with HubDouble() as double:
        yield double


def write_stack(folder: Path, hub: HubDouble, services: dict, **defaults) -> Path:
    data = {
        "name": "pulltest",
        "host": {"gpus": 2, "gpu_memory_gib": 8},
        "defaults": {
            "image": "vllm/vllm-openai:v0.32.0",
            "model_root": "./models",
            "hf_endpoint": hub.endpoint,
            **defaults,
        },
        "services": services,
    }
    path = folder / "pulltest.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def two_services(**chat_extra) -> dict:
    return {
        "chat": {"kind": "chat", "model": "org/chat", "pull": "org/chat-model", "gpus": [0],
                 "port": 19101, **chat_extra},
        "embed": {"kind": "embed", "model": "embed", "gpus": [1], "port": 19102,
                  "pull": {"repo": "org/embed-model", "revision": "main"}},
    }  # fmt: skip


def plan_of(path: Path):  # type: ignore[no-untyped-def]
    return build_plan(load_stack(path))


class Recorder:
    """A listener that keeps every event."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return lambda *a: self.events.append((name, *a))

    def of(self, kind: str) -> list[tuple]:
        return [e for e in self.events if e[0] == kind]


def test_pull_two_services_verified_pinned_and_planned_from_the_real_config(hub, tmp_path):
    chat_files, embed_files = model_files(2), model_files(1, seed=7)
    chat_commit = hub.add_repo("org/chat-model", chat_files)
    embed_commit = hub.add_repo("org/embed-model", embed_files)
    path = write_stack(tmp_path, hub, two_services())
    rec = Recorder()
    result = run(plan_of(path), listener=rec)

    for folder, files in ((tmp_path / "models/org/chat", chat_files),
                          (tmp_path / "models/embed", embed_files)):  # fmt: skip
        got = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        assert got == sorted([*WANTED, ".kit-pull.json"])  # no .bin, onnx, README, code
        for name in WANTED:
            assert (folder / name).read_bytes() == files[name]
    assert not staging_dir(tmp_path / "models/org/chat").exists()
    # only the wanted files were transferred, each once
    assert hub.served_bytes() == sum(len(chat_files[n]) + len(embed_files[n]) for n in WANTED)
    # the client resolved the revision, asked each file's metadata, and fetched weights from
    # the storage origin the hub redirected to
    paths = [(r.method, r.path) for r in hub.requests]
    assert ("GET", "/api/models/org/chat-model/revision/main") in paths
    assert ("HEAD", f"/org/chat-model/resolve/{chat_commit}/config.json") in paths
    assert any(m == "GET" and p.startswith("/lfs/") for m, p in paths)
    # the lock pins the commit and every file's checksum
    lock = hub_lock.read(tmp_path / "pulltest.lock.json")
    assert lock["org/chat"].commit == chat_commit and lock["embed"].commit == embed_commit
    weights = next(f for f in lock["org/chat"].files if f.path == "model.safetensors")
    assert (
        weights.lfs
        and weights.expected.sha256
        and weights.size == len(chat_files["model.safetensors"])
    )
    assert {f.path for f in lock["embed"].files} == set(WANTED)
    # progress per file: a start and a verified end for each
    assert len(rec.of("file_done")) == 8 and rec.of("start")[0][1:] == (result.downloaded_bytes, 8)
    # the plan now reads the pulled config.json and weights: shapes and fit are checked
    plan = plan_of(path)
    chat = plan.service("chat")
    assert chat.fit is not None and chat.weights_gib is not None
    assert not [w for w in plan.warnings if "not readable" in w]


def test_a_second_pull_downloads_nothing(hub, tmp_path):
    hub.add_repo("org/chat-model", model_files())
    hub.add_repo("org/embed-model", model_files(seed=3))
    path = write_stack(tmp_path, hub, two_services())
    run(plan_of(path))
    hub.reset_counts()
    result = run(plan_of(path))
    assert [fp.action for fp in result.folders] == ["present", "present"]
    assert hub.served_bytes() == 0 and result.downloaded_bytes == 0


def test_custom_code_is_pulled_only_with_trust_remote_code(hub, tmp_path):
    hub.add_repo("org/chat-model", model_files())
    hub.add_repo("org/embed-model", model_files())
    path = write_stack(tmp_path, hub, two_services(trust_remote_code=True))
    run(plan_of(path))
    assert (tmp_path / "models/org/chat/modeling_custom.py").is_file()
    assert not (tmp_path / "models/embed/modeling_custom.py").exists()


def test_damaged_bytes_are_detected_and_fetched_again(hub, tmp_path):
    files = model_files(2)
    hub.add_repo("org/chat-model", files)
    hub.add_repo("org/embed-model", model_files())
    hub.corrupt("model.safetensors", times=1)  # the first body served is damaged
    path = write_stack(tmp_path, hub, two_services())
    rec = Recorder()
    result = run(plan_of(path), ["chat"], listener=rec)
    assert result.retried == ["model.safetensors"]
    assert any("checksum mismatch" in e[2] for e in rec.of("file_retry"))
    assert (tmp_path / "models/org/chat/model.safetensors").read_bytes() == files[
        "model.safetensors"
    ]
    assert hub.served_bytes("model.safetensors") == 2 * len(files["model.safetensors"])


def test_bytes_that_stay_wrong_fail_the_pull_and_leave_no_model_folder(hub, tmp_path):
    hub.add_repo("org/chat-model", model_files())
    hub.add_repo("org/embed-model", model_files())
    hub.corrupt("model.safetensors", times=99)
    path = write_stack(tmp_path, hub, two_services())
    with pytest.raises(ChecksumMismatch, match="still wrong after 3 downloads"):
        run(plan_of(path), ["chat"])
    assert not (tmp_path / "models/org/chat").exists()
    lock = hub_lock.read(tmp_path / "pulltest.lock.json")
    assert "org/chat" not in lock


def test_verify_repairs_a_damaged_file_of_a_present_folder(hub, tmp_path):
    files = model_files(2)
    hub.add_repo("org/chat-model", files)
    hub.add_repo("org/embed-model", model_files())
    path = write_stack(tmp_path, hub, two_services())
    run(plan_of(path), ["chat"])
    weights = tmp_path / "models/org/chat/model.safetensors"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0x01  # same size: only hashing finds it
    weights.write_bytes(bytes(data))
    hub.reset_counts()
    assert run(plan_of(path), ["chat"]).folders[0].action == "present"  # sizes alone look fine
    result = run(plan_of(path), ["chat"], PullOptions(verify=True))
    assert result.folders[0].action == "repair"
    assert [f.path for f in result.folders[0].to_fetch] == ["model.safetensors"]
    assert weights.read_bytes() == files["model.safetensors"]
    assert hub.served_bytes() == len(files["model.safetensors"])  # nothing else downloaded


def test_disk_shortage_is_refused_before_any_byte_is_written(hub, tmp_path):
    chat, embed = model_files(2), model_files(1)
    hub.add_repo("org/chat-model", chat)
    hub.add_repo("org/embed-model", embed)
    path = write_stack(tmp_path, hub, two_services())
    need = sum(len(chat[n]) + len(embed[n]) for n in WANTED)
    with pytest.raises(DiskSpaceError) as err:
        run(plan_of(path), free_bytes=lambda p: need - 1)
    msg = str(err.value)
    assert f"({need} bytes" in msg and f"({need - 1} bytes) free" in msg
    assert "org/chat 0.00 GiB" in msg and "embed 0.00 GiB" in msg
    assert hub.served_bytes() == 0
    assert not (tmp_path / "models").exists()  # no model folder, no staging folder
    assert not (tmp_path / "pulltest.lock.json").exists()
    run(plan_of(path), free_bytes=lambda p: need)  # exactly enough is enough


def test_gated_repo_without_token_names_the_file_and_variable(hub, tmp_path):
    hub.add_repo("org/chat-model", model_files(), gated=True, tokens=("hf_goodtokenvalue12345",))
    hub.add_repo("org/embed-model", model_files())
    env = tmp_path / "llm.env"
    env.write_text("VLLM_API_KEY=sk-abcdefghijklmnopqrstuv\n")
    path = write_stack(tmp_path, hub, two_services(), api_key_env_file="llm.env")
    with pytest.raises(HubAccessError) as err:
        run(plan_of(path), ["chat"])
    msg = str(err.value)
    assert "org/chat-model" in msg and "gated" in msg
    assert f"HF_TOKEN is not set in {env}" in msg and f"put a line HF_TOKEN=<token> in {env}" in msg
    assert hub.served_bytes() == 0 and not (tmp_path / "models").exists()


def test_gated_repo_refusing_the_token_never_prints_it(hub, tmp_path):
    secret = "hf_wrongtokenvalue98765"
    hub.add_repo("org/chat-model", model_files(), gated=True, tokens=("hf_goodtokenvalue12345",))
    hub.add_repo("org/embed-model", model_files())
    (tmp_path / "llm.env").write_text(f"HF_TOKEN={secret}\n")
    path = write_stack(tmp_path, hub, two_services(), api_key_env_file="llm.env")
    res = CliRunner().invoke(cli, ["pull", str(path), "chat"])
    assert res.exit_code == 1
    assert "HTTP 403" in res.output and "has no access" in res.output
    assert "HF_TOKEN" in res.output and str(tmp_path / "llm.env") in res.output
    assert secret not in res.output and secret[3:] not in res.output
    assert not (tmp_path / "models/org/chat").exists()


def test_gated_repo_with_a_granted_token_pulls_and_keeps_it_off_the_storage_host(hub, tmp_path):
    good = "hf_goodtokenvalue12345"
    hub.add_repo("org/chat-model", model_files(), gated=True, tokens=(good,))
    hub.add_repo("org/embed-model", model_files())
    (tmp_path / "llm.env").write_text(f"export HF_TOKEN='{good}'\n")
    path = write_stack(tmp_path, hub, two_services(), api_key_env_file="llm.env")
    run(plan_of(path), ["chat"])
    assert (tmp_path / "models/org/chat/model.safetensors").is_file()
    resolve = [r for r in hub.requests if "/resolve/" in r.path]
    storage = [r for r in hub.requests if r.path.startswith("/lfs/")]
    assert resolve and all(r.authorized for r in resolve)
    assert storage and not any(r.authorized for r in storage)


def test_the_lock_reproduces_the_revision_and_update_moves_it(hub, tmp_path):
    old = model_files(1)
    first = hub.add_repo("org/chat-model", old)
    hub.add_repo("org/embed-model", model_files())
    path = write_stack(tmp_path, hub, two_services())
    run(plan_of(path), ["chat"])
    lock_file = tmp_path / "pulltest.lock.json"
    locked_text = lock_file.read_text()
    # main moves on: a new tokenizer, the same weights
    new = {**old, "tokenizer.json": b'{"model": {"vocab": {"b": 1}}}'}
    second = hub.add_repo("org/chat-model", new)
    folder = tmp_path / "models/org/chat"
    for p in sorted(folder.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    folder.rmdir()
    run(plan_of(path), ["chat"])  # a fresh host with the same stack and lock
    assert (folder / "tokenizer.json").read_bytes() == old["tokenizer.json"]
    assert json.loads((folder / ".kit-pull.json").read_text())["commit"] == first
    assert lock_file.read_text() == locked_text
    hub.reset_counts()
    result = run(plan_of(path), ["chat"], PullOptions(update=True))
    assert result.folders[0].action == "update"
    assert "lock moves from" in result.folders[0].lock_note
    assert (folder / "tokenizer.json").read_bytes() == new["tokenizer.json"]
    assert hub_lock.read(lock_file)["org/chat"].commit == second
    # only the changed file was downloaded; the weights were kept
    assert hub.served_bytes() == len(new["tokenizer.json"])


def test_a_pinned_commit_or_tag_in_the_stack(hub, tmp_path):
    first = hub.add_repo("org/chat-model", model_files(seed=1), tag="v1")
    hub.add_repo("org/chat-model", model_files(seed=2))
    hub.add_repo("org/embed-model", model_files())
    services = two_services()
    services["chat"]["pull"] = {"repo": "org/chat-model", "revision": "v1"}
    path = write_stack(tmp_path, hub, services)
    run(plan_of(path), ["chat"])
    assert hub_lock.read(tmp_path / "pulltest.lock.json")["org/chat"].commit == first


def test_a_dropped_connection_resumes_with_a_range_request(hub, tmp_path):
    files = model_files(24)
    hub.add_repo("org/chat-model", files)
    hub.add_repo("org/embed-model", model_files())
    size, cut = len(files["model.safetensors"]), 15 * MIB
    hub.drop_once("model.safetensors", after=cut)
    path = write_stack(tmp_path, hub, two_services())
    run(plan_of(path), ["chat"])
    weights = (tmp_path / "models/org/chat/model.safetensors").read_bytes()
    assert weights == files["model.safetensors"]
    ranges = [r.range for r in hub.requests if r.path.startswith("/lfs/") and r.method == "GET"]
    assert len(ranges) == 2 and ranges[0] is None and ranges[1].startswith("bytes=")
    resumed_at = int(ranges[1][6:].rstrip("-"))
    # the library writes 10 MiB chunks: what it had written is kept, the rest asked again
    assert resumed_at == 10 * MIB
    assert hub.served_bytes("model.safetensors") == size + (cut - resumed_at)


def _start_pull(path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "kit", "pull", str(path), "--workers", "4"],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _wait_for(cond, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["killed", "ctrl-c"])
def test_an_interrupted_pull_resumes_without_downloading_finished_files_again(hub, tmp_path, sig):
    chat, embed = model_files(24), model_files(1, seed=5)
    hub.add_repo("org/chat-model", chat)
    hub.add_repo("org/embed-model", embed)
    path = write_stack(tmp_path, hub, two_services())
    big = len(chat["model.safetensors"])
    hub.rate = 8 * MIB  # bytes/s: the weights take 3 s, small files arrive at once
    proc = _start_pull(path)
    # the library writes in 10 MiB chunks: wait until more than one chunk has arrived
    _wait_for(lambda: hub.served_bytes("model.safetensors") >= 12 * MIB)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    if sig == signal.SIGINT:
        assert "interrupted" in out and "resumes where it stopped" in out
    chat_dir = tmp_path / "models/org/chat"
    assert not chat_dir.exists()  # never a folder that looks complete but is not
    staging = staging_dir(chat_dir)
    part = staging / "parts/model.safetensors.part"
    kept = part.stat().st_size
    assert 10 * MIB <= kept < big
    first_run = {n: hub.served_bytes(n) for n in WANTED}
    assert all(first_run[n] == len(chat[n]) for n in WANTED if n != "model.safetensors")

    hub.rate = None
    hub.reset_counts()
    proc = _start_pull(path)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert f"resuming at {kept / MIB:.1f} MiB" in out
    # finished files are not fetched again; the weights continue from the kept bytes
    assert hub.served_bytes("config.json") == len(embed["config.json"])  # the embed one only
    assert hub.served_bytes("tokenizer.json") == len(embed["tokenizer.json"])
    assert hub.served_bytes("model.safetensors") == (big - kept) + len(embed["model.safetensors"])
    assert f"bytes={kept}-" in [r.range for r in hub.requests]
    assert (chat_dir / "model.safetensors").read_bytes() == chat["model.safetensors"]
    assert not staging.exists()


def test_cli_pull_prints_a_line_per_file_and_a_summary(hub, tmp_path):
    hub.add_repo("org/chat-model", model_files())
    hub.add_repo("org/embed-model", model_files())
    path = write_stack(tmp_path, hub, two_services())
    dry = CliRunner().invoke(cli, ["pull", str(path), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "dry run:" in dry.output and "fetch     org/chat" in dry.output
    assert not (tmp_path / "models").exists() and not (tmp_path / "pulltest.lock.json").exists()
    res = CliRunner().invoke(cli, ["pull", str(path)])
    assert res.exit_code == 0, res.output
    for name in WANTED:
        assert f"  ok    org/chat/{name} (" in res.output and f"  get   embed/{name}" in res.output
    assert "checksum verified" in res.output
    assert "fetched   org/chat: org/chat-model" in res.output
    assert (
        "left out: 2 duplicate weight formats; 1 custom code (trust_remote_code is off); 1 not read by vLLM"
        in res.output
    )
    assert "pull: 2 folders ready, 8 files" in res.output and "pulltest.lock.json" in res.output


def test_unknown_repo_and_revision_say_what_to_fix(hub, tmp_path):
    hub.add_repo("org/embed-model", model_files())
    path = write_stack(tmp_path, hub, two_services())
    with pytest.raises(HubError, match=r"org/chat-model not found on http://127\.0\.0\.1") as err:
        run(plan_of(path), ["chat"])
    assert "pull: repo id" in str(err.value)
    services = two_services()
    services["embed"]["pull"]["revision"] = "v9"
    path = write_stack(tmp_path, hub, services)
    with pytest.raises(HubError, match="has no revision 'v9'"):
        run(plan_of(path), ["embed"])


def test_an_unreachable_endpoint_is_an_error_not_a_traceback(tmp_path):
    with HubDouble() as gone:
        endpoint = gone.endpoint
    path = tmp_path / "s.yaml"
    data = {"host": {"gpus": 1, "gpu_memory_gib": 8},
            "defaults": {"image": "vllm/vllm-openai:v0.32.0", "model_root": "m",
                         "hf_endpoint": endpoint},
            "services": {"a": {"kind": "chat", "model": "a", "pull": "org/a", "gpus": [0],
                               "port": 19103}}}  # fmt: skip
    path.write_text(yaml.safe_dump(data))
    res = CliRunner().invoke(cli, ["pull", str(path)])
    assert res.exit_code == 1
    assert f"error: cannot reach {endpoint}" in res.output and "Traceback" not in res.output


def test_up_pull_fetches_missing_folders_first(hub, tmp_path, monkeypatch):
    """`kit up --pull` pulls, then plans again from the pulled files (the real-engine tier
    runs the same path through to serving)."""
    hub.add_repo("org/chat-model", model_files())
    hub.add_repo("org/embed-model", model_files())
    path = write_stack(tmp_path, hub, two_services())
    seen = {}

    def fake_up(plan, project, **kw):  # type: ignore[no-untyped-def]
        seen["plan"] = plan
        raise KitError("stop here")

    monkeypatch.setattr("kit.lifecycle.up", fake_up)
    res = CliRunner().invoke(cli, ["up", str(path), "--pull"])
    assert "stop here" in res.output
    assert (tmp_path / "models/org/chat/model.safetensors").is_file()
    assert seen["plan"].service("chat").fit is not None  # planned from the pulled config
    hub.reset_counts()
    res = CliRunner().invoke(cli, ["up", str(path), "--pull"])  # present: the hub is not asked
    assert "org/chat: present at" in res.output and "left as it is" in res.output
    assert hub.requests == []
