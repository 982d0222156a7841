"""Benchmark: what a gateway in front of the stack costs, side by side with direct requests.

Against the instant local server the client benchmark uses (bench/instant_server.py: prebuilt
bytes, 16 streamed tokens per response), at parallel 32, `kit bench` (the real CLI) drives:

- direct: the instant server itself;
- LiteLLM proxy 1.106.12 (the kit's gateway; installed from gateway/litellm.lock, every wheel
  hash-checked, in .venv-bench-litellm) with the routing settings the kit generates;
- vllm-router 0.1.17 (Rust, from PyPI, in .venv-bench-vllm-router), round robin, one worker.

Two layouts, one run each, back to back, on this machine:

- shared: the gateway, the server and the client all on the same 2 cores, as they would be
  beside CPU-bound engines;
- pinned: the gateway alone on core 1 (``taskset -c 1``), the client and the server on core 0,
  as on a GPU host where the engines leave the CPU to the gateway; the direct run of this
  layout uses the same pinning for the client and the server, so the two are side by side.

The LiteLLM config is the one kit.gateway_render generates (``litellm_config`` of a one-model
plan, api_base pointed at the instant server) with its environment (``GATEWAY_ENV``).
Targets (issue 10): requests/s through the gateway at least 90 % of direct, p50 E2E added at
most 1 ms.

Run: .venv/bin/python bench/gateway_overhead.py [-n 4000] [--layout shared|pinned|both]
     [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from client_speed import PARALLEL, TOKENS, free_port, start_server  # noqa: E402

LITELLM_VENV = REPO / ".venv-bench-litellm"
ROUTER_VENV = REPO / ".venv-bench-vllm-router"
ROUTER = "vllm-router==0.1.17"
WHEELHOUSE = Path(os.environ.get("KIT_GATEWAY_CACHE", "/var/cache/kit-gateway")) / "wheelhouse"


def _venv(path: Path, *pip_args: str) -> Path:
    if not (path / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([str(path / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        *pip_args], check=True)  # fmt: skip
        (path / ".installed").touch()
    return path


def litellm_venv() -> Path:
    src = ["--no-index", "--find-links", str(WHEELHOUSE)] if WHEELHOUSE.is_dir() else []
    return _venv(LITELLM_VENV, "--no-deps", "--require-hashes", *src,
                 "-r", str(REPO / "gateway" / "litellm.lock"))  # fmt: skip


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited ({proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not open port {port}")


def kit_litellm_config(upstream: int, tmp: Path) -> str:
    """The config kit.gateway_render generates for a one-model stack, its backend pointed at
    the instant server (the kit's own address would be the engine's name on the network)."""
    sys.path.insert(0, str(REPO))
    from kit.gateway_render import litellm_config
    from kit.plan import build_plan
    from kit.spec import parse_stack

    stack = {
        "name": "gateway-overhead",
        "host": {"gpus": 1, "gpu_memory_gib": 80},
        "defaults": {"image": "none/none:0", "vllm_version": "0.11.0"},
        "gateway": {"port": free_port()},
        "services": {"instant": {"kind": "chat", "model": "instant", "model_source": "hub",
                                 "served_name": "instant", "gpus": 1}},
    }  # fmt: skip
    plan = build_plan(parse_stack(yaml.safe_dump(stack), source="bench", base_dir=tmp))
    text = litellm_config(plan)
    kit_base = "http://instant:8000/v1"
    assert kit_base in text, text
    return text.replace(kit_base, f"http://127.0.0.1:{upstream}/v1")


def start_litellm(
    upstream: int, port: int, tmp: Path, cpus: str | None = None
) -> subprocess.Popen[bytes]:
    """LiteLLM with the config and environment kit.gateway_render generates (no key)."""
    from kit.gateway_render import GATEWAY_ENV

    path = tmp / "litellm.yaml"
    path.write_text(kit_litellm_config(upstream, tmp))
    venv = litellm_venv()
    proc = subprocess.Popen(
        [*_pin(cpus), str(venv / "bin" / "litellm"), "--config", str(path), "--host",
         "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        env={**os.environ, **GATEWAY_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(port, proc, "litellm")
    return proc


def _pin(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus is not None else []


def start_router(upstream: int, port: int, cpus: str | None = None) -> subprocess.Popen[bytes]:
    venv = _venv(ROUTER_VENV, ROUTER)
    proc = subprocess.Popen(
        [*_pin(cpus), str(venv / "bin" / "vllm-router"), "--host", "127.0.0.1", "--port", str(port),
         "--worker-urls", f"http://127.0.0.1:{upstream}", "--policy", "round_robin",
         "--prometheus-port", str(free_port())],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(port, proc, "vllm-router")
    return proc


def run_kit(port: int, n: int, tmp: Path, cpus: str | None = None) -> dict[str, float]:
    stack = {
        "name": "gateway-overhead",
        "host": {"gpus": 1, "gpu_memory_gib": 80},
        "defaults": {"image": "none/none:0", "vllm_version": "0.11.0"},
        "services": {"llm": {"kind": "chat", "model": "instant", "model_source": "hub",
                             "served_name": "instant", "gpus": 1, "port": port}},
    }  # fmt: skip
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "gateway-overhead.yaml"
    path.write_text(yaml.safe_dump(stack))
    results = tmp / "results"
    kit = REPO / ".venv" / "bin" / "kit"
    cmd = [*_pin(cpus), str(kit), "bench", str(path), "llm", "-p", str(PARALLEL), "-n", str(n),
           "--max-tokens", str(TOKENS), "--no-plots", "--results", str(results)]  # fmt: skip
    env = {**os.environ, "KIT_STATE_DIR": str(tmp / "state")}
    rec = tmp / "state" / "projects" / "gateway-overhead"
    sys.path.insert(0, str(REPO))
    from kit import record
    from kit.plan import build_plan
    from kit.spec import load_stack

    record.write(rec, build_plan(load_stack(path)))
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    run = json.loads(next(results.rglob("summary.json")).read_text())["runs"][0]
    return {"rps": run["request_throughput"], "p50_ms": run["e2e_ms"]["p50"],
            "ok": run["completed"], "failed": run["failed"]}  # fmt: skip


#: layout -> (cores of the client and the server, cores of the gateway); None: not pinned
LAYOUTS: dict[str, tuple[str | None, str | None]] = {"shared": (None, None), "pinned": ("0", "1")}


def run_layout(layout: str, n: int, tmp: Path) -> dict[str, dict[str, float]]:
    near, gw = LAYOUTS[layout]
    upstream = free_port()
    server = start_server(upstream)
    if near is not None:
        os.sched_setaffinity(server.pid, {int(c) for c in near.split(",")})
    figures: dict[str, dict[str, float]] = {}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        run_kit(upstream, 300, tmp / "warm", near)
        figures["direct"] = run_kit(upstream, n, tmp / "direct", near)
        for name, start in (
            ("LiteLLM 1.106.12", lambda p: start_litellm(upstream, p, tmp, gw)),
            ("vllm-router 0.1.17", lambda p: start_router(upstream, p, gw)),
        ):
            port = free_port()
            proc = start(port)
            procs.append(proc)
            run_kit(port, 300, tmp / f"warm-{port}", near)
            figures[name] = run_kit(port, n, tmp / str(port), near)
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        server.terminate()
        server.wait()
    return figures


def report(layout: str, figures: dict[str, dict[str, float]]) -> None:
    near, gw = LAYOUTS[layout]
    where = (f"gateway on core {gw}, client + server on core {near}" if gw is not None
             else f"gateway, client and server sharing {os.cpu_count()} cores")  # fmt: skip
    direct = figures["direct"]
    print(f"gateway overhead [{layout}: {where}]: instant server, parallel {PARALLEL}, "
          f"{TOKENS} streamed tokens, kit bench as the client; one run each")  # fmt: skip
    print(f"  {'target':22} {'req/s':>9} {'% of direct':>12} {'p50 E2E ms':>11} {'added p50':>10}")
    for name, f in figures.items():
        print(f"  {name:22} {f['rps']:9.0f} {100 * f['rps'] / direct['rps']:11.1f}% "
              f"{f['p50_ms']:11.2f} {f['p50_ms'] - direct['p50_ms']:9.2f}  "
              f"({f['ok']:.0f} ok, {f['failed']:.0f} failed)")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=4000, help="requests per target")
    ap.add_argument("--layout", choices=[*LAYOUTS, "both"], default="both")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    layouts = list(LAYOUTS) if args.layout == "both" else [args.layout]
    out: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        for layout in layouts:
            out[layout] = run_layout(layout, args.n, Path(tmpdir) / layout)
    for layout in layouts:
        report(layout, out[layout])
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
