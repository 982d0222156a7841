"""The engine double as a host subprocess on a free port, for tests that need real HTTP
but no Docker (engine double tests, bench, batch)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the package folder: `python DOUBLE serve ...` runs its __main__.py
DOUBLE = ROOT / "engine_double" / "vllm_double"

FAST_LOAD = "0.05"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def double_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIT_DOUBLE_", "VLLM_"))}
    env.pop("NVIDIA_VISIBLE_DEVICES", None)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env["KIT_DOUBLE_LOAD_SECONDS"] = FAST_LOAD
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def write_model(tmp: Path, name: str = "model", **config: object) -> Path:
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    cfg = {"architectures": ["Qwen3ForCausalLM"], "num_attention_heads": 32, "hidden_size": 64}
    cfg.update(config)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


class Double:
    """A running double: process, port and a small HTTP client."""

    def __init__(self, model: str | Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        cmd = [sys.executable, str(DOUBLE), "serve", str(model), "--host", "127.0.0.1"]
        cmd += ["--port", str(self.port), *args]
        self.proc = subprocess.Popen(
            cmd,
            env=env or double_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self, timeout: float = 10.0) -> Double:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise AssertionError(f"double exited {self.proc.returncode}:\n{out}\n{err}")
            if port_open(self.port):
                return self
            time.sleep(0.02)
        raise AssertionError("double did not open its port")

    def stop(self) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return self.proc.returncode, out, err

    def conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        c = self.conn()
        try:
            hdrs = {"content-type": "application/json", **(headers or {})}
            payload = raw if raw is not None else (None if body is None else json.dumps(body))
            c.request(method, path, body=payload, headers=hdrs)
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def get(self, path: str, **kw) -> tuple[int, dict[str, str], bytes]:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: object, **kw) -> tuple[int, dict[str, str], bytes]:
        return self.request("POST", path, body, **kw)

    def post_json(self, path: str, body: object, **kw) -> tuple[int, dict]:
        status, _, data = self.post(path, body, **kw)
        return status, json.loads(data)

    def stream(self, path: str, body: object) -> list[str]:
        """POST and return the SSE `data:` payloads in order."""
        c = self.conn()
        try:
            c.request(
                "POST", path, body=json.dumps(body), headers={"content-type": "application/json"}
            )
            r = c.getresponse()
            assert r.status == 200
            assert r.getheader("content-type", "").startswith("text/event-stream")
            text = r.read().decode()
        finally:
            c.close()
        events = [e for e in text.split("\n\n") if e.strip()]
        assert all(e.startswith("data: ") for e in events), events
        return [e[len("data: ") :] for e in events]


def launch(started: list[Double], model, *args: str, env=None, ready=True) -> Double:
    d = Double(model, *args, env=env)
    started.append(d)
    return d.wait_ready() if ready else d
