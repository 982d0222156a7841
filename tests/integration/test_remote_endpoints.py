"""The endpoint forms of ``hosts:`` besides a unix socket, run for real: host b's Docker engine
reached over tcp + TLS (``docker: tcp://...`` with ``tls:``) and through a Docker context. The
engine behind them is the second dockerd of scripts/docker-up-second.sh, which also listens on
tcp://127.0.0.1:29200 with --tlsverify and certificates it made with openssl; the kit drives it
with python-on-whales and the compose binary over that endpoint (the engine double stands in
for vLLM). Skips locally without the second engine (`make engine2`); fails in CI.

Ports of these tests: 29210-29229 (this file's stacks), 29299 (nothing listens there).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from multihostutil import (
    DOCKER2_HOST,
    DOCKER2_SSH,
    DOCKER2_TCP,
    DOCKER2_TLS,
    cleanup,
    containers,
    docker,
    need_engines,
    networks,
    two_hosts,
)
from multihostutil import write_stack as write

from dockerutil import in_ci
from kit.cli import cli

SIM_MODELS = Path(__file__).resolve().parents[2] / "stacks" / "sim-models"
DOUBLE = "kit-engine-double:dev"
#: an address where no engine listens
NOWHERE = "tcp://127.0.0.1:29299"

pytestmark = pytest.mark.docker


def kit(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def tls(ca: Path | None = None) -> dict[str, str]:
    return {
        "ca": str(ca or DOCKER2_TLS / "ca.pem"),
        "cert": str(DOCKER2_TLS / "cert.pem"),
        "key": str(DOCKER2_TLS / "key.pem"),
    }


def tls_args() -> list[str]:
    t = tls()
    return ["--tlsverify", "--tlscacert", t["ca"], "--tlscert", t["cert"], "--tlskey", t["key"]]


def need_remote_endpoints() -> None:
    """The two engines, the second one answering over tcp + TLS and over ssh: skip locally,
    FAIL in CI."""
    need_engines(DOUBLE)
    for how, args in ((f"{DOCKER2_TCP} with TLS", ["-H", DOCKER2_TCP, *tls_args()]),
                      (DOCKER2_SSH, ["-H", DOCKER2_SSH])):  # fmt: skip
        res = subprocess.run(["docker", *args, "info"], capture_output=True, text=True,
                             check=False, timeout=60)  # fmt: skip
        if res.returncode:
            why = f"the second engine does not answer on {how} (run make engine2)"
            if in_ci():
                pytest.fail(f"the remote-endpoint tests must run in CI: {why}: {res.stderr[-300:]}")
            pytest.skip(why)


@pytest.fixture
def project(tmp_path, monkeypatch) -> Iterator[Any]:
    """Write a stack over hosts a (the first engine) and b (``b``: how to reach the second);
    remove it from both engines after."""
    need_remote_endpoints()
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    made: list[str] = []

    def make(b: dict[str, Any], port: int) -> Path:
        name = f"kit-re-{uuid.uuid4().hex[:6]}"
        made.append(name)
        hosts = two_hosts(a={"gpu_memory_gib": 24}, b={"gpu_memory_gib": 24})
        # b's engine is reached like a remote one at 127.0.0.1 (it runs here): ports on 127.0.0.1
        hosts["b"] = {k: v for k, v in hosts["b"].items() if k != "docker"} | b
        return write(tmp_path, name, {
            "hosts": hosts,
            "defaults": {"image": "vllm/vllm-openai:v0.11.0", "model_root": str(SIM_MODELS)},
            "services": {
                "llm": {"kind": "chat", "model": "tiny-llm", "host": "a", "gpus": [0],
                        "port": port, "max_model_len": 8192,
                        "env": {"KIT_DOUBLE_LOAD_SECONDS": "0.5"}},
                "embed": {"kind": "embed", "model": "tiny-embed", "host": "b", "gpus": [1],
                          "port": port + 1, "env": {"KIT_DOUBLE_LOAD_SECONDS": "0.5"}},
            },
        })  # fmt: skip

    yield make
    for name in made:
        cleanup(name)


@pytest.fixture
def context() -> Iterator[str]:
    """A Docker context (unique name) for the second engine over tcp + TLS; removed after."""
    name = f"kit-re-{uuid.uuid4().hex[:8]}"
    t = tls()
    res = docker(None, "context", "create", name, "--description", "kit test (remote endpoints)",
                 "--docker", f"host={DOCKER2_TCP},ca={t['ca']},cert={t['cert']},key={t['key']}")  # fmt: skip
    assert res.returncode == 0, res.stderr
    yield name
    docker(None, "context", "rm", "-f", name)


def up_status_smoke_down(path: Path, engine: str, state: Path) -> None:
    """The stack comes up on both engines, shows in status, passes smoke, and goes away."""
    name = path.stem
    res = kit("up", str(path), "--image", DOUBLE)
    assert res.exit_code == 0, res.output + res.stderr
    assert containers(None, name) == [f"{name}-llm-1"]
    # host b's part runs on the second engine (looked at through its unix socket)
    assert containers(DOCKER2_HOST, name) == [f"{name}-embed-1"]
    res = kit("status", str(path))
    assert res.exit_code == 0, res.output
    rows = {ln.split()[0]: ln.split() for ln in res.output.splitlines() if " running " in ln}
    assert {k: v[1:3] for k, v in rows.items()} == {"llm": ["a", "chat"], "embed": ["b", "embed"]}
    record = json.loads((state / "projects" / name / "deployment.json").read_text())
    assert record["hosts"]["b"]["engine"] == engine
    res = kit("smoke", str(path))
    assert res.exit_code == 0 and " 0 failed" in res.output, res.output
    res = kit("logs", str(path), "embed", "-n", "3")
    assert "==> host 'b' embed <==" in res.output and "Application startup complete" in res.output
    res = kit("down", str(path))
    assert res.exit_code == 0, res.output
    for host in (None, DOCKER2_HOST):
        assert containers(host, name) == [] and networks(host, name) == []


def test_host_over_tcp_with_tls(project, tmp_path):
    path = project({"docker": DOCKER2_TCP, "tls": tls()}, 29210)
    up_status_smoke_down(path, DOCKER2_TCP, tmp_path / "state")


def test_host_over_ssh(project, tmp_path):
    path = project({"docker": DOCKER2_SSH}, 29222)
    up_status_smoke_down(path, DOCKER2_SSH, tmp_path / "state")


def test_host_through_a_docker_context(project, context, tmp_path):
    path = project({"context": context}, 29212)
    up_status_smoke_down(path, f"context {context}", tmp_path / "state")


def test_doctor_reaches_the_tls_engine(project):
    path = project({"docker": DOCKER2_TCP, "tls": tls()}, 29214)
    res = kit("doctor", str(path))
    rows = [ln.split() for ln in res.output.splitlines()]
    engines = {r[0]: r[3] for r in rows if len(r) > 3 and r[1:3] == ["docker", "engine"]}
    assert engines == {"a:": "ok", "b:": "ok"}, res.output


def wrong_ca(folder: Path) -> Path:
    """A CA that did not sign the second engine's certificate."""
    key, ca = folder / "other-ca-key.pem", folder / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-days",
                    "2", "-keyout", str(key), "-out", str(ca), "-subj", "/CN=not the kit CA"],
                   capture_output=True, check=True)  # fmt: skip
    return ca


def refused(path: Path, host_label: str, *why: str) -> None:
    """``kit up`` stops before starting anything, naming host b and why."""
    res = kit("up", str(path), "--image", DOUBLE)
    assert res.exit_code == 4, res.output + res.stderr
    assert f"host 'b' ({host_label}): the Docker engine does not answer" in res.stderr, res.stderr
    for w in why:
        assert w in res.stderr, res.stderr
    assert "Traceback" not in res.output + res.stderr
    for host in (None, DOCKER2_HOST):
        assert containers(host, path.stem) == []


def test_a_wrong_ca_is_refused_naming_the_host(project, tmp_path):
    path = project({"docker": DOCKER2_TCP, "tls": tls(wrong_ca(tmp_path))}, 29216)
    refused(path, DOCKER2_TCP, "x509: certificate signed by unknown authority",
            "; hosts.b.tls.ca is not the CA that signed the engine's certificate")  # fmt: skip
    res = kit("doctor", str(path))
    assert res.exit_code == 1
    row = next(ln for ln in res.output.splitlines() if ln.split()[:3] == ["b:", "docker", "engine"])
    assert row.split()[3] == "fail" and "hosts.b.tls.ca is not the CA" in row, res.output


def test_an_unreachable_tcp_endpoint_is_named(project):
    path = project({"docker": NOWHERE, "tls": tls()}, 29218)
    refused(path, NOWHERE, f"Cannot connect to the Docker daemon at {NOWHERE}",
            f"is the engine listening there (dockerd -H {NOWHERE})? or fix hosts.b.docker")  # fmt: skip


def test_a_missing_context_is_named(project):
    missing = f"kit-re-missing-{uuid.uuid4().hex[:6]}"
    path = project({"context": missing}, 29220)
    refused(path, f"context {missing}", f'context "{missing}": context not found',
            f"create the context (docker context create {missing} --docker host=...)")  # fmt: skip


def test_an_ssh_endpoint_that_does_not_log_in_is_named(project):
    # a host name ssh does not know: the docker CLI's ssh helper fails, the kit names the host
    nowhere = "ssh://root@kit-no-such-host.invalid"
    path = project({"docker": nowhere}, 29224)
    refused(path, nowhere, "ssh logs in there with a key")
