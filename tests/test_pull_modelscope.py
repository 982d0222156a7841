"""`kit pull` from ModelScope with the REAL `modelscope_hub` client (the engine of `modelscope`
1.40) against a local DOUBLE of ModelScope's API (tests/modelscopedouble.py; no hub is reachable
here), through the stack's `modelscope_endpoint`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
from pathlib import Path

import pytest
from modelscopedouble import ModelScopeDouble
from test_pull import WANTED, model_files, plan_of, write_stack
from test_pull_hub_cache import StopAfterWeights

from kit import hub_lock, hub_source
from kit.errors import KitError
from kit.hub_client import HubAccessError, HubError
from kit.pull import PullOptions, run

PORTS = itertools.count(29130)  # this port range; a new port per test
MS_REPO = "org/ms-chat"
KEY = "org/chat"


@pytest.fixture
def ms():
    with ModelScopeDouble(port=next(PORTS)) as double:
        yield double


def ms_stack(tmp_path: Path, ms: ModelScopeDouble, **source) -> Path:
    services = {
        "chat": {"kind": "chat", "model": KEY, "gpus": [0], "port": 29121,
                 "pull": {"repo": MS_REPO, "hub": "modelscope", **source}},
    }  # fmt: skip
    return write_stack(tmp_path, ms, services, modelscope_endpoint=ms.endpoint)


def folder(tmp_path: Path) -> Path:
    return tmp_path / "models" / KEY


def test_pull_from_modelscope_verified_locked_and_planned(ms, tmp_path):
    files = model_files(2)
    ms.add_repo(MS_REPO, files)
    path = ms_stack(tmp_path, ms)
    result = run(plan_of(path))
    (fp,) = result.folders
    assert fp.action == "fetch" and fp.target.source.revision == "master"
    got = sorted(p.relative_to(folder(tmp_path)).as_posix() for p in folder(tmp_path).rglob("*"))
    assert got == sorted([*WANTED, ".kit-pull.json"])  # no .bin, onnx, README, code
    for name in WANTED:
        assert (folder(tmp_path) / name).read_bytes() == files[name]
    assert ms.served_bytes() == sum(len(files[n]) for n in WANTED)
    # the real client's calls: the revisions, the file list, then each file
    paths = [r.path for r in ms.requests]
    assert f"/api/v1/models/{MS_REPO}/revisions" in paths
    assert f"/api/v1/models/{MS_REPO}/repo/files" in paths
    assert paths.count(f"/api/v1/models/{MS_REPO}/repo") == len(WANTED)
    locked = hub_lock.read(tmp_path / "pulltest.lock.json")[KEY]
    assert locked.source.hub == "modelscope" and locked.commit.startswith("ms-")
    assert {f.path: f.expected.sha256 for f in locked.files} == {
        n: hashlib.sha256(files[n]).hexdigest() for n in WANTED
    }
    plan = plan_of(path)
    assert plan.service("chat").fit is not None
    (tmp_path / "n").mkdir()
    with pytest.raises(HubError, match="no revision 'nope'"):
        run(plan_of(ms_stack(tmp_path / "n", ms, revision="nope")))


def test_a_second_pull_downloads_nothing_and_an_interrupted_one_resumes(ms, tmp_path):
    files = model_files(2)
    ms.add_repo(MS_REPO, files)
    path = ms_stack(tmp_path, ms)
    with pytest.raises(Exception, match=r"model\.safetensors"):
        run(plan_of(path), options=PullOptions(workers=1), listener=StopAfterWeights())
    assert not folder(tmp_path).exists()  # never a folder that looks complete
    ms.reset_counts()
    run(plan_of(path))
    assert ms.served_bytes("model.safetensors") == 0  # verified before the stop: kept
    assert (folder(tmp_path) / "model.safetensors").read_bytes() == files["model.safetensors"]
    ms.reset_counts()
    result = run(plan_of(path))
    assert [fp.action for fp in result.folders] == ["present"] and ms.served_bytes() == 0


def test_corrupted_files_are_fetched_again(ms, tmp_path):
    files = model_files(2)
    ms.add_repo(MS_REPO, files)
    ms.corrupt("model.safetensors", times=1)
    path = ms_stack(tmp_path, ms)
    result = run(plan_of(path))
    assert result.retried == ["model.safetensors"]
    weights = folder(tmp_path) / "model.safetensors"
    assert weights.read_bytes() == files["model.safetensors"]
    data = bytearray(weights.read_bytes())
    data[64] ^= 0xFF
    weights.write_bytes(bytes(data))  # damaged on disk, same size: --verify finds it
    ms.reset_counts()
    result = run(plan_of(path), options=PullOptions(verify=True))
    assert result.folders[0].action == "repair"
    assert ms.served_bytes() == len(files["model.safetensors"])
    assert weights.read_bytes() == files["model.safetensors"]


def test_the_lock_reproduces_the_files_and_refuses_a_moved_branch(ms, tmp_path):
    old = model_files(1)
    ms.add_repo(MS_REPO, old, tag="v1")
    path = ms_stack(tmp_path, ms)
    run(plan_of(path))
    lock_file = tmp_path / "pulltest.lock.json"
    locked_text = lock_file.read_text()
    shutil.rmtree(tmp_path / "models")  # a fresh host with the same stack and lock
    run(plan_of(path))
    assert lock_file.read_text() == locked_text
    assert json.loads((folder(tmp_path) / ".kit-pull.json").read_text())["commit"] == (
        hub_lock.read(lock_file)[KEY].commit
    )
    new = {**old, "tokenizer.json": b'{"model": {"vocab": {"b": 1}}}'}
    ms.add_repo(MS_REPO, new)  # master moves on
    shutil.rmtree(tmp_path / "models")
    with pytest.raises(KitError, match="now holds other files than the lock") as err:
        run(plan_of(path))
    assert "pin a tag or commit" in (err.value.hint or "")
    assert not folder(tmp_path).exists()
    result = run(plan_of(path), options=PullOptions(update=True))
    assert "lock moves from" in result.folders[0].lock_note
    assert (folder(tmp_path) / "tokenizer.json").read_bytes() == new["tokenizer.json"]
    # a tag pins for good: the same stack pulls v1's files whatever master did
    (tmp_path / "t").mkdir()
    tagged = ms_stack(tmp_path / "t", ms, revision="v1")
    run(plan_of(tagged))
    assert (tmp_path / "t/models" / KEY / "tokenizer.json").read_bytes() == old["tokenizer.json"]


def test_private_repo_token_and_endpoint_settings(ms, tmp_path, monkeypatch):
    ms.add_repo(MS_REPO, model_files(), token="ms-secret-token")
    path = ms_stack(tmp_path, ms)
    with pytest.raises(HubAccessError) as err:
        run(plan_of(path))
    text = f"{err.value} {err.value.hint}"
    assert "MODELSCOPE_API_TOKEN" in text and "ms-secret-token" not in text
    env = tmp_path / "kit.env"
    env.write_text("MODELSCOPE_API_TOKEN=ms-secret-token\n")
    env.chmod(0o600)
    path = write_stack(
        tmp_path,
        ms,
        {"chat": {"kind": "chat", "model": KEY, "gpus": [0], "port": 29121,
                  "pull": {"repo": MS_REPO, "hub": "modelscope"}}},
        modelscope_endpoint=ms.endpoint,
        api_key_env_file=str(env),
    )  # fmt: skip
    run(plan_of(path))
    assert (folder(tmp_path) / "config.json").is_file()
    assert all(r.auth for r in ms.requests if r.path.endswith("/repo"))
    # no stack setting: MODELSCOPE_ENDPOINT, else the older MODELSCOPE_DOMAIN (a host name)
    (tmp_path / "b").mkdir()
    bare = write_stack(
        tmp_path / "b", ms, {"chat": {"kind": "chat", "model": KEY, "gpus": [0], "port": 29122}}
    )
    monkeypatch.delenv("MODELSCOPE_ENDPOINT", raising=False)
    monkeypatch.setenv("MODELSCOPE_DOMAIN", "mirror.example")
    assert hub_source.endpoint(plan_of(bare), "modelscope") == "https://mirror.example"
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", ms.endpoint)
    assert hub_source.endpoint(plan_of(bare), "modelscope") == ms.endpoint
