"""Stacks over several hosts (kit.hosts): the hosts: section, per-host planning and checks,
one compose file per host, the record, and the CLI's per-host views. No Docker needed (the
compose files go through the real compose binary's `config`, which needs no engine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from kit import hosts, record
from kit.cli import cli
from kit.errors import StackError
from kit.lint import compose_config_problems, schema_problems
from kit.plan import build_plan
from kit.spec import parse_stack
from stackutil import write_model

D2 = "unix:///run/kit-docker2/docker.sock"


def stack_data(**services: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "two",
        "hosts": {
            "a": {"gpus": 4, "gpu_memory_gib": 80, "address": "10.0.0.1"},
            "b": {"gpus": 2, "gpu_memory_gib": 80, "address": "10.0.0.2", "docker": D2},
        },
        "defaults": {"image": "vllm/vllm-openai:v0.32.0"},
        "services": services
        or {
            "chat": {
                "kind": "chat",
                "model": "org/chat",
                "host": "a",
                "gpus": [0, 1],
                "port": 9001,
            },
            "embed": {
                "kind": "embed",
                "model": "org/embed",
                "host": "b",
                "gpus": [0],
                "port": 9002,
            },
            "rerank": {
                "kind": "rerank",
                "model": "org/rerank",
                "host": "b",
                "gpus": [0],
                "port": 9003,
            },
        },
    }


def plan_of(data: dict[str, Any], tmp_path: Path | None = None):  # type: ignore[no-untyped-def]
    source = str(tmp_path / "two.yaml") if tmp_path else "<memory>"
    if tmp_path:
        Path(source).write_text(yaml.safe_dump(data))
    return build_plan(parse_stack(yaml.safe_dump(data), source=source, base_dir=tmp_path or "."))


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(StackError) as err:
        plan_of(data)
    return err.value.problems


def test_each_service_is_planned_on_its_host():
    plan = plan_of(stack_data())
    by = {s.name: s for s in plan.services}
    assert (by["chat"].host, by["chat"].gpus) == ("a", (0, 1))
    # GPU 0 exists on both hosts: the same id on two hosts is two GPUs
    assert (by["embed"].host, by["embed"].gpus) == ("b", (0,))
    # sharing and start order are per host: rerank waits for embed on host b's GPU 0
    assert by["rerank"].depends_on == ("embed",)
    assert by["embed"].fraction + by["rerank"].fraction <= 0.95
    # an engine on this machine is reached on loopback; the remote one at its address
    assert by["chat"].api_address == "127.0.0.1"
    assert by["embed"].api_address == "127.0.0.1"  # unix:// socket: this machine
    assert hosts.plan_hosts(plan) == ["a", "b"]


def test_a_remote_host_is_reached_at_its_address():
    data = stack_data()
    data["hosts"]["b"].update(docker="ssh://kit@10.0.0.2", bind_address="0.0.0.0")
    plan = plan_of(data)
    assert {s.name: s.api_address for s in plan.services}["embed"] == "10.0.0.2"


def test_every_problem_names_its_host():
    data = stack_data(
        chat={"kind": "chat", "model": "org/chat", "host": "a", "gpus": [0], "port": 9001,
              "served_name": "m"},
        embed={"kind": "embed", "model": "org/embed", "host": "b", "gpus": [2], "port": 9002},
        other={"kind": "chat", "model": "org/x", "host": "c", "gpus": 1, "port": 9003},
        loose={"kind": "chat", "model": "org/y", "gpus": [1], "port": 9004},
    )  # fmt: skip
    found = problems_of(data)
    assert any("service 'other', field 'host': unknown host 'c' (hosts: a, b)" in p for p in found)
    assert any(
        "service 'loose', field 'host': GPU ids mean nothing without a host" in p for p in found
    )
    data = stack_data(
        chat={"kind": "chat", "model": "org/chat", "host": "a", "gpus": [0], "port": 9001,
              "served_name": "m"},
        embed={"kind": "embed", "model": "org/embed", "host": "b", "gpus": [2], "port": 9002},
        dup={"kind": "chat", "model": "org/z", "host": "b", "gpus": [1], "port": 9003,
             "served_name": "m"},
    )  # fmt: skip
    found = problems_of(data)
    # checked by host b's own plan, named with its host
    assert any(
        p.startswith("host 'b': service 'embed', field 'gpus': GPU id 2 outside") for p in found
    )
    data["services"]["embed"]["gpus"] = [0]
    found = problems_of(data)
    assert found == [
        "service 'dup', field 'served_name': 'm' is already served by 'chat' (on another host); "
        "served names are unique in a stack"
    ]


def test_ports_clash_only_where_two_hosts_share_an_address():
    data = stack_data()
    data["services"]["embed"]["port"] = 9001  # same port as chat on host a
    found = problems_of(data)  # both engines are on this machine: one address
    assert any("port 9001 on 127.0.0.1 (host 'b') is already used by service 'chat'" in p
               for p in found)  # fmt: skip
    data["hosts"]["b"].update(docker="tcp://10.0.0.2:2376", bind_address="10.0.0.2")
    plan_of(data)  # another machine: its own ports


def test_remote_hosts_need_an_address_and_a_reachable_bind():
    data = stack_data()
    data["hosts"]["b"] = {"gpus": 2, "gpu_memory_gib": 80, "docker": "ssh://kit@gpu-b"}
    found = problems_of(data)
    assert any(p.startswith("host 'b': give address (or api_address)") for p in found)
    assert any(p.startswith("host 'b', field 'bind_address': its services would listen on 127.0.0.1")
               for p in found)  # fmt: skip
    # an engine reached at a loopback address runs on this machine: 127.0.0.1 is reachable
    data["hosts"]["b"].update(docker="tcp://127.0.0.1:2376", address="127.0.0.1")
    data["services"]["embed"]["port"] = 9009  # (one address: ports must differ)
    assert plan_of(data).stack.hosts["b"].address == "127.0.0.1"


def test_automatic_host_placement_fills_the_first_host_with_room():
    plan = plan_of(stack_data(
        big={"kind": "chat", "model": "org/big", "gpus": 4, "port": 9001},
        small={"kind": "chat", "model": "org/small", "gpus": 2, "port": 9002},
        tiny={"kind": "embed", "model": "org/e", "gpus": 1, "port": 9003},
    ))  # fmt: skip
    where = {s.name: (s.host, s.gpus) for s in plan.services}
    assert where == {"big": ("a", (0, 1, 2, 3)), "small": ("b", (0, 1)), "tiny": ("a", (0,))}
    assert "small: placed on host 'b' (2 of 2 GPUs free there)" in plan.notes
    assert any("tiny" in w and "shares GPU 0" in w for w in plan.warnings)


def test_host_and_hosts_sections_exclude_each_other():
    data = stack_data()
    data["host"] = {"gpus": 8, "gpu_memory_gib": 80}
    with pytest.raises(StackError, match=r"give host: \(one host\) or hosts: \(several"):
        plan_of(data)
    single = {"name": "one", "host": {"gpus": 8, "gpu_memory_gib": 80},
              "defaults": {"image": "vllm/vllm-openai:v0.32.0"},
              "services": {"x": {"kind": "chat", "model": "o/x", "gpus": 1, "port": 9001, "host": "a"}}}  # fmt: skip
    assert problems_of(single) == [
        "service 'x', field 'host': the stack has one host (host:); list the hosts under hosts: "
        "(each with its Docker engine) to place services on them"
    ]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"docker": "10.0.0.2:2375"}, "is not a Docker endpoint"),
        ({"docker": "unix:///x", "context": "gpu"}, "give docker or context, not both"),
        (
            {"docker": "ssh://a@b", "tls": {"ca": "c", "cert": "d", "key": "e"}},
            "tls goes with a tcp://",
        ),
        ({"interface": "eth 0"}, "not a network interface name"),
    ],
)
def test_host_entries_are_checked(entry, message):
    data = stack_data()
    data["hosts"]["b"] = {"gpus": 2, "gpu_memory_gib": 80, **entry}
    with pytest.raises(StackError, match=message):
        plan_of(data)


def test_one_compose_file_per_host_passes_its_validators():
    plan = plan_of(stack_data())
    texts = hosts.compose_texts(plan)
    assert set(texts) == {"a", "b"}
    a, b = (yaml.safe_load(texts[h]) for h in "ab")
    assert set(a["services"]) == {"chat"} and set(b["services"]) == {"embed", "rerank"}
    assert a["services"]["chat"]["labels"]["kit.host"] == "a"
    assert b["services"]["rerank"]["depends_on"] == {"embed": {"condition": "service_healthy"}}
    assert "host 'b' of 2 (unix:///run/kit-docker2/docker.sock)" in texts["b"]
    for text in texts.values():
        assert schema_problems(text) == []
        assert compose_config_problems(text) == []
    assert hosts.compose_texts(plan) == texts  # deterministic


def test_record_round_trips_a_plan_over_hosts(tmp_path):
    plan = plan_of(stack_data(), tmp_path)
    record.write(tmp_path / "rec", plan)
    back = record.read(tmp_path / "rec")
    assert back is not None and back.plan == plan
    data = yaml.safe_load((tmp_path / "rec" / "deployment.json").read_text())
    assert data["hosts"]["b"] == {
        "engine": D2, "address": "10.0.0.2", "api_address": "127.0.0.1",
        "services": ["embed", "rerank"], "parts": [],
    }  # fmt: skip
    assert [(s["name"], s["host"]) for s in data["services"]] == [
        ("chat", "a"), ("embed", "b"), ("rerank", "b")]  # fmt: skip


def test_host_view_is_a_single_host_plan():
    plan = plan_of(stack_data())
    view = hosts.host_view(plan, "b")
    assert view.stack.host is not None and view.stack.host.gpus == 2
    assert [s.name for s in view.services] == ["embed", "rerank"]
    assert list(view.gpu_map()) == [0, 1]


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_cli_render_per_host(tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(stack_data()))
    res = run("render", str(path))
    assert res.exit_code == 1 and "spans hosts a, b: pick one with --host HOST" in res.output
    res = run("render", str(path), "--host", "b")
    assert res.exit_code == 0 and "  embed:" in res.stdout and "  chat:" not in res.stdout
    res = run("render", str(path), "--dir", str(tmp_path / "out"))
    assert res.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.yml", "b.yml"]
    res = run("render", str(path), "--host", "c")
    assert res.exit_code == 1 and "no compose file for host 'c'" in res.output


def test_cli_plan_shows_each_host(tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(stack_data()))
    res = run("plan", str(path))
    assert res.exit_code == 0, res.output
    assert "over 2 hosts: a (the default engine, 4 GPUs), b (unix:///run/kit-docker2" in res.output
    assert "host 'a'" in res.output and "host 'b'" in res.output


def test_lint_checks_every_host_file(tmp_path):
    from kit.lint import lint_stack

    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(stack_data()))
    seen = []
    res = lint_stack(path, compose_check=lambda text: seen.append(text) or [])
    assert res.ok, res.problems
    assert len(seen) == 2


def test_model_folders_checked_here_only_for_engines_here(tmp_path):
    data = stack_data()
    data["defaults"]["model_root"] = str(tmp_path)
    data["hosts"]["b"].update(docker="ssh://kit@10.0.0.2", bind_address="0.0.0.0")
    write_model(tmp_path / "org" / "chat", weights_gib=1)
    plan = plan_of(data)
    local = {s.name: hosts.local_model_paths(plan, s) for s in plan.services}
    assert local == {"chat": True, "embed": False, "rerank": False}


GOLDEN = Path(__file__).parent / "golden" / "hosts"
REPO = Path(__file__).resolve().parent.parent


def test_golden_per_host_files_of_the_shipped_stack(monkeypatch):
    """stacks/two-hosts.yaml: one file per host, each the layout of compose.yaml.j2."""
    import difflib
    import os

    monkeypatch.setenv("HOME", "/home/operator")
    plan = build_plan(parse_stack((REPO / "stacks" / "two-hosts.yaml").read_text(),
                                  source=str(REPO / "stacks" / "two-hosts.yaml"),
                                  default_name="two-hosts.yaml"))  # fmt: skip
    texts = hosts.compose_texts(plan)
    assert list(texts) == ["gpu-a", "gpu-b", "gpu-c"]
    for host, text in texts.items():
        golden = GOLDEN / f"two-hosts.{host}.yml"
        if os.environ.get("KIT_UPDATE_GOLDEN") == "1":
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(text)
        expected = golden.read_text()
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True)))
        assert text == expected, f"{golden.name} differs:\n{diff}"
        assert schema_problems(text) == []
    a = yaml.safe_load(texts["gpu-a"])["services"]["deepseek-r1"]
    assert a["network_mode"] == "host" and "ports" not in a
    assert a["environment"]["VLLM_HOST_IP"] == "10.0.0.11"
    assert a["environment"]["NCCL_SOCKET_IFNAME"] == "eth1"
    b = yaml.safe_load(texts["gpu-b"])["services"]["deepseek-r1-node1"]
    assert b["command"][-1] == "--headless" and "healthcheck" not in b
    assert b["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == [
        str(g) for g in range(8)
    ]
