"""One model over several hosts (kit.multinode): the recipe per vLLM version, each host's
command line and container, the checks, the fit over TP x PP, and how the kit tells that a
cluster has formed (from real `ray status` output and vLLM's rank lines). No Docker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kit import hosts, multinode
from kit import vllm_versions as vv
from kit.errors import StackError
from kit.plan import build_plan
from kit.spec import parse_stack
from stackutil import write_model


def data(version: str = "0.32.0", **svc: Any) -> dict[str, Any]:
    big = {"kind": "chat", "model": "org/big", "hosts": ["a", "b"], "gpus": [0, 1],
           "tensor_parallel_size": 2, "pipeline_parallel_size": 2, "port": 9000, **svc}  # fmt: skip
    return {
        "name": "mn",
        "hosts": {
            "a": {"gpus": 4, "gpu_memory_gib": 80, "address": "10.0.0.1", "interface": "eth1"},
            "b": {
                "gpus": 4,
                "gpu_memory_gib": 80,
                "address": "10.0.0.2",
                "docker": "tcp://10.0.0.2:2376",
                "bind_address": "10.0.0.2",
            },
        },
        "defaults": {"image": f"vllm/vllm-openai:v{version}"},
        "services": {"big": big},
    }


def plan_of(d: dict[str, Any], base: Path | str = "."):  # type: ignore[no-untyped-def]
    return build_plan(parse_stack(yaml.safe_dump(d), base_dir=base))


def problems(d: dict[str, Any]) -> list[str]:
    with pytest.raises(StackError) as err:
        plan_of(d)
    return err.value.problems


@pytest.mark.parametrize(
    ("version", "recipe"), [("0.11.0", "ray"), ("0.11.1", "native"), ("0.32.0", "native")]
)
def test_the_recipe_follows_the_version_table(version, recipe):
    assert vv.default_multinode_backend(vv.V(version)) == recipe
    (s,) = plan_of(data(version)).services
    assert s.recipe == recipe
    assert [p.host for p in s.nodes] == ["a", "b"]


def test_native_command_lines_per_host():
    (s,) = plan_of(data()).services
    head, node = s.nodes
    assert (head.name, node.name) == ("big", "big-node1")
    assert head.entrypoint == node.entrypoint == ("vllm", "serve")
    tail = ["--distributed-executor-backend", "mp", "--nnodes", "2", "--node-rank"]
    assert list(head.command[-10:]) == [
        *tail,
        "0",
        "--master-addr",
        "10.0.0.1",
        "--master-port",
        "29501",
    ]
    assert list(node.command[-11:]) == [*tail, "1", "--master-addr", "10.0.0.1", "--master-port",
                                        "29501", "--headless"]  # fmt: skip
    # host networking: the API listens on the head host's bind address and the stack's port
    args = list(head.command)
    assert (
        args[args.index("--host") + 1] == "127.0.0.1" and args[args.index("--port") + 1] == "9000"
    )
    assert head.env["VLLM_HOST_IP"] == "10.0.0.1" and node.env["VLLM_HOST_IP"] == "10.0.0.2"
    assert head.env["NCCL_SOCKET_IFNAME"] == head.env["GLOO_SOCKET_IFNAME"] == "eth1"
    assert "NCCL_SOCKET_IFNAME" not in node.env  # host b names no interface
    assert s.api_address == "127.0.0.1" and s.gpus == (0, 1)


def test_ray_recipe_head_and_worker():
    d = data("0.32.0", multinode={"backend": "ray", "port": 6400})
    (s,) = plan_of(d).services
    head, node = s.nodes
    assert head.entrypoint == ("/bin/sh", "-c", multinode.RAY_HEAD_SCRIPT, "vllm")
    assert head.command[-2:] == ("--distributed-executor-backend", "ray")
    start = head.env["KIT_RAY_START"].split()
    assert start[:3] == ["--head", "--include-dashboard=false", "--node-ip-address=10.0.0.1"]
    assert "--port=6400" in start and "--num-gpus=2" in start
    assert node.entrypoint == ("ray", "start")
    assert node.command[:2] == ("--block", "--address=10.0.0.1:6400")
    assert "--node-ip-address=10.0.0.2" in node.command
    # the compose file escapes the script's own variables from compose's interpolation
    text = hosts.render_host(plan_of(d), "a")
    assert 'ray start $$KIT_RAY_START && exec vllm serve \\"$$@\\"' in text


def test_ray_ports_are_fixed_per_node():
    assert multinode.ray_ports(19400, 0, 24) == {
        "port": 19400, "ray-client-server-port": 19401, "node-manager-port": 19402,
        "object-manager-port": 19403, "dashboard-agent-listen-port": 19404,
        "dashboard-agent-grpc-port": 19405, "metrics-export-port": 19406,
        "runtime-env-agent-port": 19407, "min-worker-port": 19410, "max-worker-port": 19433,
    }  # fmt: skip
    one = multinode.ray_ports(19400, 1, 24)
    assert one["node-manager-port"] == 19434 and one["max-worker-port"] == 19465
    assert "min-worker-port" not in multinode.ray_ports(6379, 1)  # Ray's own range


def test_multinode_problems_are_named():
    d = data("0.11.0", multinode={"backend": "native"})
    assert any("has no native multi-node launch (from 0.11.1); use ray" in p for p in problems(d))
    d = data(tensor_parallel_size=4)
    assert any("tensor_parallel_size 4 x pipeline_parallel_size 2 = 8, but the service gets 2 GPUs "
               "on each of 2 hosts = 4" in p for p in problems(d))  # fmt: skip
    d = data()
    del d["hosts"]["b"]["address"]
    d["hosts"]["b"]["api_address"] = "10.0.0.2"
    assert any("host b need an address" in p or "hosts b need" in p for p in problems(d))
    d = data(gpus=[3, 4])
    assert any("GPU id 4 outside host 'a' (4 GPUs)" in p for p in problems(d))
    d = data(extra_args=["--nnodes", "3"])
    assert any("--nnodes is set by the kit; use the 'hosts' field" in p for p in problems(d))
    d = data(extra_args=["--distributed-executor-backend", "ray"])
    assert any("choose the recipe with multinode.backend" in p for p in problems(d))
    d = data(hosts=["a"])
    assert any("name at least two different hosts" in p for p in problems(d))


def test_ray_nodes_sharing_an_address_need_their_own_worker_ports():
    d = data(multinode={"backend": "ray"})
    d["hosts"]["b"].update(address="10.0.0.1")
    assert any("share an address, so their Ray nodes would race" in p for p in problems(d))
    d["services"]["big"]["multinode"]["ray_worker_ports"] = 32
    plan_of(d)


def test_cluster_ports_and_gpus_are_the_services_alone():
    d = data()
    d["services"]["x"] = {"kind": "embed", "model": "org/e", "host": "a", "gpus": [1], "port": 9001}
    assert any("GPU 1 of host 'a' already belongs to another service" in p for p in problems(d))
    d["services"]["x"].update(gpus=[2], port=29501)  # the master port, on host a
    assert problems(d) == [
        "service 'big' (its native cluster): port 29501 on 127.0.0.1 (host 'a') is already used "
        "by service 'x'; choose another"
    ]
    d["services"]["x"].update(gpus=1, port=9001)  # a count: placed around the multi-node part
    plan = plan_of(d)
    assert {s.name: s.gpus for s in plan.services}["x"] == (2,)
    assert any("x: placed on GPU 2 of host 'a'" in n for n in plan.notes)


def test_the_fit_divides_by_tp_x_pp_over_the_hosts(tmp_path):
    write_model(tmp_path / "org" / "big", weights_gib=200, heads=32, layers=32)
    one = {"name": "one", "host": {"gpus": 2, "gpu_memory_gib": 80},
           "defaults": {"image": "vllm/vllm-openai:v0.32.0", "model_root": str(tmp_path)},
           "services": {"big": {"kind": "chat", "model": "org/big", "gpus": 2, "port": 9000,
                                "max_model_len": 4096}}}  # fmt: skip
    with pytest.raises(StackError, match="does not fit"):
        plan_of(one, tmp_path)  # 100 GiB of weights per GPU on one host of 2 x 80 GiB
    d = data(max_model_len=4096)
    d["defaults"]["model_root"] = str(tmp_path)
    d["hosts"]["b"].update(docker=None, bind_address=None)
    plan = plan_of(d, tmp_path)
    (s,) = plan.services
    assert s.fit is not None and s.fit.fits
    assert s.fit.weights_gib == pytest.approx(50.0)  # 200 GiB over TP 2 x PP 2
    assert any("the fit check divides weights and KV cache by 4" in n for n in plan.notes)


# real `ray status` of the two-engine cluster on this machine (kit-real-vllm-ray:0.32.0)
RAY_STATUS = """\
======== Autoscaler status: 2026-12-01 04:58:29.651349 ========
Node status
---------------------------------------------------------------
Active:
 1 node_8f2acdf265b78319ec870bbb40031e08c56a91476879394c15973a49
 1 node_5adfd3164adb6863df45b788c3c31c706d5d0181909097d9cf2db7ea
Pending:
 (no pending nodes)
Recent failures:
 (no failures)

Resources
---------------------------------------------------------------
Total Usage:
 0.0/2.0 CPU
 0.0/2.0 GPU
 0B/32.71GiB memory
 0B/14.02GiB object_store_memory
"""


def test_a_ray_cluster_counts_as_formed_with_every_node_and_gpu():
    (s,) = plan_of(data("0.32.0", gpus=[0], tensor_parallel_size=1,
                        multinode={"backend": "ray"})).services  # fmt: skip
    assert multinode.ray_formed(s, RAY_STATUS) is None
    one_node = RAY_STATUS.replace(
        " 1 node_5adfd3164adb6863df45b788c3c31c706d5d0181909097d9cf2db7ea\n", ""
    ).replace("0.0/2.0 GPU", "0.0/1.0 GPU")
    assert multinode.ray_formed(s, one_node) == "Ray cluster: 1/2 nodes, 1/2 GPUs"


def test_a_native_world_counts_as_formed_with_every_rank():
    (s,) = plan_of(data()).services  # 2 hosts x 2 GPUs: ranks 0-3
    line = "(EngineCore_DP0 pid=288) INFO [parallel_state.py:1208] rank {} in world size 4 is assigned as DP rank 0, PP rank 0, TP rank 0, EP rank 0"
    head = "\n".join(line.format(r) for r in (0, 1))
    assert multinode.native_formed(s, [head]) == "2/4 ranks joined"
    assert multinode.native_formed(s, [head, line.format(2) + "\n" + line.format(3)]) is None
