"""The engine double's multi-node behaviour (engine_double/vllm_double/multinode.py), run as
host processes on real sockets: vLLM's native launch as the kit sees it. THE DOUBLE IS NOT
vLLM: a real multi-node vLLM cannot run on this machine's CPUs (see the README), so the kit's
orchestration tests use this."""

from __future__ import annotations

import signal
import time

import pytest

from doubleutil import Double, double_env, free_port, port_open, write_model

V = {"KIT_DOUBLE_VLLM_VERSION": "0.32.0", "NVIDIA_VISIBLE_DEVICES": "0,1"}


@pytest.fixture
def model(tmp_path):
    return write_model(tmp_path, num_attention_heads=8)


@pytest.fixture
def nodes():
    started: list[Double] = []
    yield started
    for d in started:
        d.stop()


def node(started, model, rank: int, master: int, *extra: str, **env):  # type: ignore[no-untyped-def]
    """Node ``rank`` of a TP 2 x PP 2 world over 2 nodes, with its master on ``master``."""
    args = ["--tensor-parallel-size", "2", "--pipeline-parallel-size", "2", "--nnodes", "2",
            "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(master),
            *(["--headless"] if rank else []), *extra]  # fmt: skip
    d = Double(model, *args, env=double_env(**{**V, **env}))
    started.append(d)
    return d


def wait_for(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_head_waits_for_every_node_then_serves(nodes, model):
    master = free_port()
    head = node(nodes, model, 0, master)
    time.sleep(1.0)  # loading takes 0.05 s: only the missing node keeps the port closed
    assert not port_open(head.port) and head.proc.poll() is None
    worker = node(nodes, model, 1, master)
    wait_for(lambda: port_open(head.port))
    assert worker.proc.poll() is None and not port_open(worker.port)  # headless: no API
    head.stop()
    _code, out, _err = worker.stop()
    assert "rank 2 in world size 4 is assigned as DP rank 0, PP rank 1, TP rank 0" in out
    assert "rank 3 in world size 4 is assigned" in out


def test_a_lost_node_kills_the_head(nodes, model):
    master = free_port()
    head = node(nodes, model, 0, master)
    worker = node(nodes, model, 1, master)
    wait_for(lambda: port_open(head.port))
    worker.proc.send_signal(signal.SIGKILL)
    wait_for(lambda: head.proc.poll() is not None)
    code, _out, err = head.stop()
    assert code == 1
    assert "node 1 (ranks 2, 3) is gone" in err
    assert "Connection closed by peer [127.0.0.1]:" in err


def test_a_lost_head_ends_the_headless_node(nodes, model):
    master = free_port()
    head = node(nodes, model, 0, master)
    worker = node(nodes, model, 1, master)
    wait_for(lambda: port_open(head.port))
    head.proc.send_signal(signal.SIGKILL)
    wait_for(lambda: worker.proc.poll() is not None)
    code, _out, err = worker.stop()
    assert code == 1 and "Connection closed by peer" in err


def test_each_node_checks_its_own_share_of_the_world(nodes, model):
    # 4 ranks over 2 nodes: 2 per node, but this node sees one GPU
    head = node(nodes, model, 0, free_port(), NVIDIA_VISIBLE_DEVICES="0")
    wait_for(lambda: head.proc.poll() is not None)
    code, _out, err = head.stop()
    assert code == 1 and "is larger than the number of available GPUs (1)" in err


def test_vllm_refuses_nnodes_with_another_executor(nodes, model):
    head = node(nodes, model, 0, free_port(), "--distributed-executor-backend", "ray")
    wait_for(lambda: head.proc.poll() is not None)
    code, _out, err = head.stop()
    assert code == 1 and "nnodes > 1 can only be set when distributed exectuor backend is mp" in err


def test_versions_before_0_11_1_have_no_nnodes(nodes, model):
    head = node(nodes, model, 0, free_port(), KIT_DOUBLE_VLLM_VERSION="0.11.0")
    wait_for(lambda: head.proc.poll() is not None)
    code, _out, err = head.stop()
    assert code == 2 and "unrecognized arguments: --nnodes 2 --node-rank 0" in err
