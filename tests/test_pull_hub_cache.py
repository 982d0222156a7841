"""`kit pull` of `model_source: hub` services into the host's HF cache (`defaults.cache.hf`, the
folder the container mounts as HF_HOME), in the library's own layout, with the REAL
`huggingface_hub` client against the hub DOUBLE (tests/hubdouble.py; no hub is reachable here).

Whether the container finds the files is checked with the library itself: the rendered compose
file's HF_HOME mount and HF_HUB_OFFLINE, then `snapshot_download(local_files_only=True)` and
`try_to_load_from_cache` in a fresh interpreter with that environment on the host folder.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hubdouble import HubDouble, git_oid
from test_pull import WANTED, model_files, plan_of, write_stack

from kit import hub_lock
from kit.errors import KitError
from kit.hub_cache import missing_offline
from kit.pull import PullOptions, prepare, run
from kit.render import HF_HOME, render_compose

REPO = "org/hubchat"


#: this issue's port range; a new pair per test, as the client keeps connections alive
PORTS = itertools.count(29110, 2)


@pytest.fixture
def hub():
    port = next(PORTS)
    with HubDouble(port=port, storage_port=port + 1) as double:
        yield double


def hub_services(**chat_extra) -> dict:
    return {
        "chat": {"kind": "chat", "model": REPO, "model_source": "hub", "gpus": [0],
                 "port": 29120, **chat_extra},
    }  # fmt: skip


def stack(tmp_path: Path, hub: HubDouble, **chat_extra) -> Path:
    return write_stack(tmp_path, hub, hub_services(**chat_extra), cache={"hf": "./hf"})


def repo_dir(tmp_path: Path) -> Path:
    return tmp_path / "hf/hub/models--org--hubchat"


def resolve_like_the_container(hf_home: Path, env: dict[str, str]) -> dict:
    """The library, as vLLM calls it in the container, on the host folder the compose mounts."""
    code = (
        "import json, sys\n"
        "from huggingface_hub import snapshot_download, try_to_load_from_cache\n"
        f"snap = snapshot_download({REPO!r}, local_files_only=True)\n"
        f"files = {{n: try_to_load_from_cache({REPO!r}, n) for n in {list(WANTED)!r}}}\n"
        "print(json.dumps({'snapshot': snap, 'files': files}))\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env, "HF_HOME": str(hf_home)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_a_hub_service_is_pulled_into_the_cache_the_container_reads(hub, tmp_path):
    files = model_files(2)
    commit = hub.add_repo(REPO, files)
    path = stack(tmp_path, hub, pull=REPO)
    before = plan_of(path)
    # `kit up` refuses to start a service that would run offline on an empty cache
    assert missing_offline(before.stack, before.services) == [
        "chat: org/hubchat (not pulled into the HF cache ./hf)"
    ]
    result = run(before)
    assert missing_offline(before.stack, before.services) == []

    (fp,) = result.folders
    assert fp.target.cache and fp.action == "fetch"
    repo = repo_dir(tmp_path)
    # the library's layout: blobs named by the hub's ETag, relative links, refs/main
    assert (repo / "refs/main").read_text() == commit
    snap = repo / "snapshots" / commit
    assert sorted(p.name for p in snap.iterdir()) == sorted(WANTED)  # no .bin, onnx, README
    for name in WANTED:
        link = snap / name
        assert link.is_symlink() and not os.readlink(link).startswith("/")
        assert link.read_bytes() == files[name]
    weights = snap / "model.safetensors"
    assert weights.resolve().parent == (repo / "blobs").resolve()
    locked = hub_lock.read(tmp_path / "pulltest.lock.json")[f"hf-cache:{REPO}"]
    locked_weights = next(f for f in locked.files if f.path == "model.safetensors")
    assert weights.resolve().name == locked_weights.expected.sha256
    assert (repo / "blobs" / git_oid(files["config.json"])).is_file()
    assert not (repo / ".kit-pull").exists()
    assert hub.served_bytes() == sum(len(files[n]) for n in WANTED)
    # the plan now reads the pulled config.json and weights from the cache
    plan = plan_of(path)
    assert plan.service("chat").fit is not None and plan.service("chat").weights_gib is not None
    assert not [w for w in plan.warnings if "shape and fit not checked" in w]
    # the lock records it like the other models
    assert locked.commit == commit and {f.path for f in locked.files} == set(WANTED)

    # the rendered container: HF_HOME is this host folder, offline, so main -> the locked commit
    compose = yaml.safe_load(render_compose(plan_of(path)))["services"]["chat"]
    env = compose["environment"]
    assert env["HF_HOME"] == HF_HOME and env["HF_HUB_OFFLINE"] == "1"
    (mount,) = [v for v in compose["volumes"] if v["target"] == HF_HOME]
    assert mount["type"] == "bind" and Path(mount["source"]) == tmp_path / "hf"
    assert compose["command"][0] == REPO  # vLLM asks the library for the hub id
    seen = resolve_like_the_container(Path(mount["source"]), {"HF_HUB_OFFLINE": "1"})
    assert Path(seen["snapshot"]) == snap
    assert {n: Path(p).read_bytes() for n, p in seen["files"].items()} == {
        n: files[n] for n in WANTED
    }


def test_a_second_pull_downloads_nothing_and_kit_up_pull_leaves_it(hub, tmp_path):
    hub.add_repo(REPO, model_files())
    path = stack(tmp_path, hub)  # no pull: field: the model id is the source
    run(plan_of(path))
    hub.reset_counts()
    result = run(plan_of(path))
    assert [fp.action for fp in result.folders] == ["present"]
    assert hub.served_bytes() == 0 and result.downloaded_bytes == 0
    again = prepare(plan_of(path), options=PullOptions(only_missing=True))
    assert again.folders == [] and any("present" in n for n in again.notes)
    # without pull: the container is not forced offline (vLLM may still reach the hub)
    compose = yaml.safe_load(render_compose(plan_of(path)))["services"]["chat"]
    assert "HF_HUB_OFFLINE" not in compose["environment"]


def test_the_lock_reproduces_the_commit_and_update_fetches_only_what_changed(hub, tmp_path):
    old = model_files(1)
    first = hub.add_repo(REPO, old)
    path = stack(tmp_path, hub, pull=REPO)
    run(plan_of(path))
    lock_file = tmp_path / "pulltest.lock.json"
    locked_text = lock_file.read_text()
    new = {**old, "tokenizer.json": b'{"model": {"vocab": {"b": 1}}}'}
    second = hub.add_repo(REPO, new)  # main moves on
    shutil.rmtree(tmp_path / "hf")  # a fresh host with the same stack and lock
    run(plan_of(path))
    repo = repo_dir(tmp_path)
    assert (repo / "refs/main").read_text() == first
    assert (repo / "snapshots" / first / "tokenizer.json").read_bytes() == old["tokenizer.json"]
    assert lock_file.read_text() == locked_text
    hub.reset_counts()
    result = run(plan_of(path), options=PullOptions(update=True))
    assert result.folders[0].action == "update"
    # the unchanged blobs are reused: only the new tokenizer crosses the wire
    assert hub.served_bytes() == len(new["tokenizer.json"])
    assert (repo / "refs/main").read_text() == second
    assert (repo / "snapshots" / second / "tokenizer.json").read_bytes() == new["tokenizer.json"]
    assert hub_lock.read(lock_file)[f"hf-cache:{REPO}"].commit == second
    seen = resolve_like_the_container(tmp_path / "hf", {"HF_HUB_OFFLINE": "1"})
    assert Path(seen["snapshot"]).name == second


def test_damaged_blobs_are_refetched(hub, tmp_path):
    files = model_files(2)
    hub.add_repo(REPO, files)
    hub.corrupt("model.safetensors", times=1)  # damaged in transit: caught as it arrives
    path = stack(tmp_path, hub)
    result = run(plan_of(path))
    assert result.retried == ["model.safetensors"]
    weights = next((repo_dir(tmp_path) / "snapshots").iterdir()) / "model.safetensors"
    assert weights.read_bytes() == files["model.safetensors"]
    # damaged on disk (same size): --verify hashes the blobs and fetches only that one again
    blob = weights.resolve()
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    hub.reset_counts()
    result = run(plan_of(path), options=PullOptions(verify=True))
    assert result.folders[0].action == "repair"
    assert [f.path for f in result.folders[0].to_fetch] == ["model.safetensors"]
    assert weights.read_bytes() == files["model.safetensors"]
    assert hub.served_bytes() == len(files["model.safetensors"])


class Stop(Exception):
    pass


class StopAfterWeights:
    """A listener that breaks the pull off once the weights are verified (as a kill would)."""

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return lambda *a: None

    def file_done(self, label: str, *rest: object) -> None:
        if label.endswith("model.safetensors"):
            raise Stop(label)


def test_an_interrupted_cache_pull_shows_no_revision_and_resumes(hub, tmp_path):
    files = model_files(2)
    commit = hub.add_repo(REPO, files)
    path = stack(tmp_path, hub)
    with pytest.raises(Stop):
        run(plan_of(path), options=PullOptions(workers=1), listener=StopAfterWeights())
    repo = repo_dir(tmp_path)
    # nothing the library would read: no ref, no snapshot; the verified weights are staged
    assert not (repo / "refs").exists() and not (repo / "snapshots").exists()
    assert (repo / ".kit-pull/files/model.safetensors").is_file()
    hub.reset_counts()
    run(plan_of(path))
    assert (repo / "refs/main").read_text() == commit
    assert hub.served_bytes("model.safetensors") == 0
    assert (repo / "snapshots" / commit / "model.safetensors").read_bytes() == files[
        "model.safetensors"
    ]


def test_hub_services_without_a_host_cache_or_with_another_repo(hub, tmp_path):
    hub.add_repo(REPO, model_files())
    path = write_stack(tmp_path, hub, hub_services())  # no defaults.cache.hf: a named volume
    result = prepare(plan_of(path))
    assert result.folders == [] and any("defaults.cache.hf" in n for n in result.notes)
    path = write_stack(tmp_path, hub, hub_services(pull=REPO))
    with pytest.raises(KitError, match=r"set defaults\.cache\.hf to a host folder"):
        prepare(plan_of(path))
    path = stack(tmp_path, hub, pull="org/other")
    with pytest.raises(KitError, match="make them the same"):
        prepare(plan_of(path))
    path = stack(tmp_path, hub, pull={"repo": REPO, "revision": "v1"})
    with pytest.raises(KitError, match="pulls main"):
        prepare(plan_of(path))
