"""The deployment record (kit.record): plan -> JSON -> the same plan, and how a STACK argument
finds the record of what runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from kit import __version__, record
from kit.engine import project_folder
from kit.errors import KitError
from kit.plan import build_plan
from kit.record import RecordError
from kit.spec import list_stacks, load_stack
from kit.stack_plan import Plan
from stackutil import BASE_STACK, deep_merge

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def state(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "state"
    monkeypatch.setenv("KIT_STATE_DIR", str(d))
    return d


@pytest.fixture
def stacks(tmp_path) -> Path:
    d = tmp_path / "stacks"
    d.mkdir()
    return d


def write_stack(folder: Path, name: str, patch: dict | None = None) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(deep_merge(BASE_STACK, patch or {}), sort_keys=False))
    return path


def deploy(path: Path, **kw) -> Plan:
    """What `kit up` records, without starting anything."""
    plan = build_plan(load_stack(path))
    record.write(project_folder(plan.stack.name), plan, **kw)
    return plan


@pytest.mark.parametrize("path", list_stacks(REPO / "stacks"), ids=lambda p: p.stem)
def test_every_shipped_stack_round_trips(path, tmp_path):
    plan = build_plan(load_stack(path))
    record.write(tmp_path, plan, image_override="kit-engine-double:dev")
    data = json.loads((tmp_path / record.FILE_NAME).read_text())
    back = record.plan_from_record(data)
    assert back == plan
    assert back.stack.source == plan.stack.source and back.stack.base_dir == plan.stack.base_dir
    assert type(back.services[0].gpus) is tuple
    dep = record.read(tmp_path)
    assert dep is not None and dep.plan == plan and dep.image_override == "kit-engine-double:dev"


def test_record_says_what_was_deployed(stacks, tmp_path):
    key = tmp_path / "k.env"
    key.write_text("VLLM_API_KEY=very-secret-value\n")
    path = write_stack(
        stacks,
        "one",
        {
            "defaults": {"api_key_env_file": str(key), "bind_address": "0.0.0.0"},
            "services": {"llm": {"extra_args": ["--max-num-seqs", "64"]}},
        },
    )
    plan = deploy(path, image_override="kit-engine-double:dev", started_at="2025-01-01T00:00:00Z")
    text = (project_folder("one") / "deployment.json").read_text()
    assert "very-secret-value" not in text  # the key file's path, never the key
    data = json.loads(text)
    assert data["schema"] == record.SCHEMA and data["kit_version"] == __version__
    assert data["state"] == "ready" and data["project"] == "one"
    assert data["started_at"] == "2025-01-01T00:00:00Z" and data["written_at"].endswith("Z")
    assert data["stack"] == {
        "name": "one",
        "file": str(path.resolve()),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "base_dir": str(stacks),
    }
    assert data["vllm_version"] == "0.11.0" and data["bind_address"] == "0.0.0.0"
    assert data["api_key_env_file"] == str(key)
    assert data["image"] == {
        "stack": "vllm/vllm-openai:v0.11.0",
        "override": "kit-engine-double:dev",
    }
    [svc] = data["services"]
    s = plan.service("llm")
    assert svc["gpus"] == [0, 1, 2, 3] and svc["fraction"] == s.fraction
    assert svc["port"] == 9001 and svc["url"] == "http://127.0.0.1:9001"
    assert svc["engine_args"] == list(s.engine_args) and "--max-num-seqs" in svc["engine_args"]
    assert svc["image"] == "kit-engine-double:dev" and svc["image_override"] is True
    assert svc["kind"] == "chat" and svc["served_name"] == "llm"
    assert not list(project_folder("one").glob("*.tmp"))  # written atomically


def test_drift_when_the_file_changes_or_goes(stacks):
    path = write_stack(stacks, "one")
    deploy(path)
    dep = record.deployed(str(path))
    assert dep.drift() is None
    path.write_text(path.read_text().replace("9001", "9011"))
    assert "changed since `kit up` (sha256 differs)" in record.deployed(str(path)).drift()
    path.unlink()
    assert "is gone" in record.deployed(str(path)).drift()


def test_lookup_by_name_and_path_without_reading_the_yaml(stacks, monkeypatch):
    monkeypatch.chdir(stacks.parent)  # `stacks/` of the current folder is where names point
    path = write_stack(stacks, "foo", {"name": "bar"})  # project bar, from foo.yaml
    plan = deploy(path)
    for ref in ("foo", "stacks/foo.yaml", str(path), "bar"):
        dep = record.find(ref)
        assert dep is not None and dep.plan == plan, ref
    # edited into something that does not even parse: found by its path, the YAML unread
    path.write_text("services: [\n")
    assert record.deployed("foo").plan == plan
    assert record.deployed(str(path)).name == "bar"
    # deleted: still found by where it was, and by the project name
    path.unlink()
    assert record.deployed("foo").plan == plan
    assert record.deployed("bar").plan == plan


def test_moved_stack_file_finds_the_project_it_names(stacks, tmp_path):
    path = write_stack(stacks, "one")
    plan = deploy(path)
    moved = tmp_path / "elsewhere.yaml"
    path.rename(moved)
    moved.write_text(moved.read_text() + "name: one\n")
    dep = record.deployed(str(moved))
    assert dep.plan == plan and dep.stack_file == str(path.resolve())


def test_not_up_is_a_clear_error(stacks):
    write_stack(stacks, "idle")
    assert record.find(str(stacks / "idle.yaml")) is None
    assert record.find("nothing-here") is None
    with pytest.raises(KitError) as info:
        record.deployed("nothing-here")
    assert "stack 'nothing-here' is not up: no deployment record; run `kit up nothing-here`" in (
        str(info.value)
    )


def test_a_record_of_another_project_is_not_taken(stacks):
    # stacks/two.yaml names project two; a record of project "one" exists: not a match
    deploy(write_stack(stacks, "one"))
    two = write_stack(stacks, "two", {"services": {"llm": {"port": 9005}}})
    assert record.find(str(two)) is None


def test_two_projects_from_one_file_are_ambiguous(stacks):
    path = write_stack(stacks, "one")
    deploy(path)
    path.write_text(path.read_text() + "name: other\n")
    deploy(path)
    with pytest.raises(KitError, match=r"several deployments come from .*: one, other"):
        record.find(str(path))
    assert record.deployed("other").name == "other"  # by project name it is clear


def test_unreadable_records(stacks):
    path = write_stack(stacks, "one")
    deploy(path)
    file = project_folder("one") / record.FILE_NAME
    data = json.loads(file.read_text())
    file.write_text(json.dumps({**data, "schema": 99}))
    with pytest.raises(RecordError, match=r"schema 99, this kit .* reads schema 1") as info:
        record.find(str(path))
    assert info.value.project == "one" and "kit down one" in str(info.value)
    del data["plan"]["services"][0]["port"]
    file.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=r"ServicePlan\.port is missing"):
        record.find("one")
    file.write_text("{not json")
    with pytest.raises(RecordError, match="not JSON"):
        record.find("one")
    record.remove(project_folder("one"))
    assert record.find("one") is None


def test_rewrite_and_remove(stacks):
    path = write_stack(stacks, "one")
    plan = build_plan(load_stack(path))
    folder = project_folder("one")
    record.write(folder, plan, state="starting")
    assert record.read(folder).state == "starting"
    record.write(folder, plan, state="failed", detail="interrupted")
    dep = record.read(folder)
    assert (dep.state, dep.detail) == ("failed", "interrupted")
    with pytest.raises(ValueError):
        record.write(folder, plan, state="sideways")
    record.remove(folder)
    record.remove(folder)  # twice is fine
    assert record.read(folder) is None
