"""Benchmark: how soon does `kit up` report ready, against plain `docker compose up --wait`?

SIMULATION on the engine double (no GPU): every service of the simulated stack "loads" for
LOAD_S seconds. An independent prober polls each service's /health every 20 ms and records
when the last one turned healthy. We report:

- kit lag: `kit up` returned this long after the last service really turned healthy
  (target: under 1 s);
- kit up and `docker compose up -d --wait` wall times on the same rendered file, and their
  ratio (one run each, measured back to back).

Run: .venv/bin/python bench/up_overhead.py [--load 10] [--image kit-engine-double:dev]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from dockerutil import free_port  # noqa: E402
from kit import lifecycle  # noqa: E402
from kit.client import Endpoint, PortClosed  # noqa: E402
from kit.engine import Project  # noqa: E402
from kit.plan import build_plan  # noqa: E402
from kit.render import RenderOptions  # noqa: E402
from kit.spec import load_stack  # noqa: E402


def make_stack(tmp: Path, load_s: float) -> Path:
    data = yaml.safe_load((REPO / "stacks" / "sim-demo.yaml").read_text())
    data["defaults"]["model_root"] = str(REPO / "stacks" / "sim-models")
    for svc in data["services"].values():
        svc["port"] = free_port()
        svc["env"]["KIT_DOUBLE_LOAD_SECONDS"] = str(load_s)
    path = tmp / f"bench-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Prober(threading.Thread):
    """Records, per port, the first moment /health answered 200."""

    def __init__(self, ports: list[int]) -> None:
        super().__init__(daemon=True)
        self.ports = ports
        self.first_ok: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and len(self.first_ok) < len(self.ports):
            for port in self.ports:
                if port in self.first_ok:
                    continue
                try:
                    if Endpoint("127.0.0.1", port).get("/health", timeout=0.5).status == 200:
                        self.first_ok[port] = time.monotonic()
                except (PortClosed, OSError):
                    pass
            time.sleep(0.02)


def run_kit(path: Path, image: str) -> dict[str, float]:
    plan = build_plan(load_stack(path))
    project = Project(plan, options=RenderOptions(image=image))
    prober = Prober([s.port for s in plan.services])
    prober.start()
    t0 = time.monotonic()
    lifecycle.up(plan, project)
    t1 = time.monotonic()
    prober.stop.set()
    prober.join()
    last_healthy = max(prober.first_ok.values())
    lifecycle.down(project)
    return {"wall_s": t1 - t0, "lag_s": t1 - last_healthy}


def run_compose(path: Path, image: str) -> dict[str, float]:
    plan = build_plan(load_stack(path))
    project = Project(plan, options=RenderOptions(image=image))
    project.write()
    cmd = ["docker", "compose", "-f", str(project.compose_file), "-p", plan.stack.name]
    t0 = time.monotonic()
    subprocess.run([*cmd, "up", "-d", "--wait"], check=True, capture_output=True)
    t1 = time.monotonic()
    subprocess.run([*cmd, "down", "-t", "1"], check=True, capture_output=True)
    return {"wall_s": t1 - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--load", type=float, default=10.0, help="seconds each service 'loads'")
    ap.add_argument("--image", default="kit-engine-double:dev")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["KIT_STATE_DIR"] = str(Path(tmp) / "state")
        kit = run_kit(make_stack(Path(tmp), args.load), args.image)
        compose = run_compose(make_stack(Path(tmp), args.load), args.image)
    figures = {
        "load_s": args.load,
        "kit_up_wall_s": round(kit["wall_s"], 2),
        "kit_lag_after_last_healthy_s": round(kit["lag_s"], 2),
        "compose_up_wait_wall_s": round(compose["wall_s"], 2),
        "kit_over_compose_ratio": round(kit["wall_s"] / compose["wall_s"], 3),
    }
    print("SIMULATION (engine double, 3 services, embed+rerank share a GPU and start in order)")
    for k, v in figures.items():
        print(f"  {k:32} {v}")
    ok = figures["kit_lag_after_last_healthy_s"] < 1.0
    print(
        f"  target: ready reported within 1 s of the last healthy service: {'met' if ok else 'MISSED'}"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
