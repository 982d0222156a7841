"""Benchmark: the load client must never be the bottleneck.

Against an instant local OpenAI-compatible server (bench/instant_server.py: prebuilt bytes,
16 output tokens per streamed response) at parallel 32, measure how many requests/s each client
drives on this machine, one run each, back to back:

- `kit bench` (the real CLI, as a user runs it; target: at least 2,500 requests/s);
- `evalscope perf` (installed in its own venv by bench/setup_evalscope.sh; skipped if absent);
- a plain aiohttp client and a plain asyncio+httpx client (floors for reference).

Run: .venv/bin/python bench/client_speed.py [-n 8000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
PARALLEL = 32
TOKENS = 16
TARGET_RPS = 2500.0
EVALSCOPE = Path(os.environ.get("EVALSCOPE_VENV", REPO / ".venv-evalscope")) / "bin" / "evalscope"
BODY = {
    "model": "instant",
    "messages": [{"role": "user", "content": "hello world, how are you today?"}],
    "max_tokens": TOKENS,
    "stream": True,
    "stream_options": {"include_usage": True},
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "instant_server.py"), "--port", str(port),
         "--tokens", str(TOKENS), "--model", "instant"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    import socket

    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("instant server did not start")


def run_kit(port: int, n: int, tmp: Path) -> dict[str, float]:
    stack = {
        "name": "client-speed",
        "host": {"gpus": 1, "gpu_memory_gib": 80},
        "defaults": {"image": "none/none:0", "vllm_version": "0.11.0"},
        "services": {"llm": {"kind": "chat", "model": "instant", "model_source": "hub",
                             "served_name": "instant", "gpus": 1, "port": port}},
    }  # fmt: skip
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "client-speed.yaml"
    path.write_text(yaml.safe_dump(stack))
    results = tmp / "kit-results"
    kit = REPO / ".venv" / "bin" / "kit"
    cmd = [str(kit) if kit.exists() else "kit", "bench", str(path), "llm", "-p", str(PARALLEL),
           "-n", str(n), "--max-tokens", str(TOKENS), "--no-plots", "--results", str(results)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    run = json.loads(next(results.rglob("summary.json")).read_text())["runs"][0]
    return {"rps": run["request_throughput"], "ok": run["completed"], "failed": run["failed"]}


async def _plain_aiohttp(url: str, n: int) -> tuple[int, float]:
    import aiohttp

    body = json.dumps(BODY).encode()
    done = 0
    nxt = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:

        async def worker() -> None:
            nonlocal done, nxt
            while nxt < n:
                nxt += 1
                async with s.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as r:
                    async for _ in r.content:
                        pass
                    done += r.status == 200

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(PARALLEL)))
        return done, time.perf_counter() - t0


async def _plain_httpx(url: str, n: int) -> tuple[int, float]:
    import httpx

    done = 0
    nxt = 0
    limits = httpx.Limits(max_connections=PARALLEL, max_keepalive_connections=PARALLEL)
    async with httpx.AsyncClient(limits=limits, timeout=60) as c:

        async def worker() -> None:
            nonlocal done, nxt
            while nxt < n:
                nxt += 1
                async with c.stream("POST", url, json=BODY) as r:
                    async for _ in r.aiter_lines():
                        pass
                    done += r.status_code == 200

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(PARALLEL)))
        return done, time.perf_counter() - t0


def run_plain(which: str, port: int, n: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    fn = _plain_aiohttp if which == "aiohttp" else _plain_httpx
    done, secs = asyncio.run(fn(url, n))
    return {"rps": done / secs, "ok": done, "failed": n - done}


def run_evalscope(port: int, n: int, tmp: Path) -> dict[str, float] | None:
    """`evalscope perf` from its own venv (bench/EVALSCOPE.md); None when not installed.

    evalscope exits 0 even when requests fail, so the counts come from its summary JSON.
    """
    if not EVALSCOPE.exists():
        return None
    data = tmp / "evalscope-q.jsonl"
    data.write_text("".join(json.dumps({"question": f"hello world {i}, how are you?"}) + "\n"
                            for i in range(100)))  # fmt: skip
    out = tmp / "evalscope-out"
    cmd = [str(EVALSCOPE), "perf", "--url", f"http://127.0.0.1:{port}/v1/chat/completions",
           "--api", "openai", "--model", "instant", "--parallel", str(PARALLEL), "-n", str(n),
           "--stream", "--max-tokens", str(TOKENS), "--dataset", "openqa",
           "--dataset-path", str(data), "--outputs-dir", str(out), "--no-timestamp",
           "--name", "evalscope", "--total-timeout", "120"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "MODELSCOPE_OFFLINE": "1"}  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, check=False)
    found = list(out.glob("evalscope/parallel_*_number_*/benchmark_summary.json"))
    if not found:
        print(
            f"evalscope perf produced no summary (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
        )
        return None
    summary = json.loads(found[0].read_text())
    return {
        "rps": float(summary["Req Throughput (req/s)"]),
        "ok": summary["Success Requests"],
        "failed": summary["Failed Requests"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=8000, help="requests per client")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    port = free_port()
    server = start_server(port)
    figures: dict[str, dict[str, float] | None] = {}
    try:
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir)
            run_kit(port, 500, tmp / "warm")  # warm caches and the server's connections
            figures["kit bench"] = run_kit(port, args.n, tmp)
            figures["evalscope perf"] = run_evalscope(port, args.n, tmp)
            figures["plain aiohttp"] = run_plain("aiohttp", port, args.n)
            figures["plain asyncio+httpx"] = run_plain("httpx", port, max(1000, args.n // 4))
    finally:
        server.terminate()
        server.wait()
    kit = figures["kit bench"]["rps"]  # type: ignore[index]
    evs = figures["evalscope perf"]
    print(f"client speed: instant server, parallel {PARALLEL}, {TOKENS} streamed tokens, "
          f"{os.cpu_count()} cores; one run each")  # fmt: skip
    print(f"  {'client':24} {'req/s':>9} {'ok/failed':>12} {'kit / this':>11}")
    for name, f in figures.items():
        if f is None:
            print(f"  {name:24} {'(not installed: bash bench/setup_evalscope.sh)':>34}")
            continue
        print(
            f"  {name:24} {f['rps']:9.0f} {int(f['ok']):>6}/{int(f['failed']):<5} {kit / f['rps']:11.2f}"
        )
    ok = kit >= TARGET_RPS
    print(f"  target: kit bench >= {TARGET_RPS:.0f} req/s: {'met' if ok else 'MISSED'}"
          + (f"; kit / evalscope = {kit / evs['rps']:.2f}" if evs else ""))  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
