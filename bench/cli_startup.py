#!/usr/bin/env python3
"""CLI start-up: how long `kit --help`, `kit plan` and `kit render` take on top of a bare
interpreter's start, run side by side (A B A B ...) so machine drift hits both alike.

    .venv/bin/python bench/cli_startup.py [-n 15] [--stack source-notes] [--vs CHECKOUT]

--vs runs the same commands from another checkout of the kit too (e.g. `git worktree add
/tmp/base HEAD~1`), interleaved with this one, and prints the ratios.

Each figure is the median wall time of whole processes (fork, exec, imports, work, exit) over
-n runs after one warm-up; "added" is that median minus the bare interpreter's median
(`python -c pass`, the same interpreter). Also prints which heavy modules each command imports
(`python -X importtime`), since importing only what a command uses is the point.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("aiohttp", "jsonschema", "matplotlib", "rich", "jinja2", "pydantic", "yaml", "kit.batch")


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
    return time.perf_counter() - t0


def imported(argv: list[str], env: dict[str, str]) -> list[str]:
    res = subprocess.run(
        [sys.executable, "-X", "importtime", *argv[1:]],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    names = {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines()}
    return [h for h in HEAVY if h in names]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=15)
    ap.add_argument("--stack", default="source-notes")
    ap.add_argument("--vs", type=Path, help="another checkout of the kit, measured alongside")
    opts = ap.parse_args()
    py = sys.executable
    root = Path(__file__).resolve().parent.parent
    stack = str(root / "stacks" / f"{opts.stack}.yaml")
    checkouts = {"this": root} | ({"vs": opts.vs.resolve()} if opts.vs else {})
    commands: dict[str, tuple[list[str], dict[str, str]]] = {
        "python -c pass": ([py, "-c", "pass"], dict(os.environ))
    }
    for label, tree in checkouts.items():
        env = dict(os.environ, PYTHONPATH=str(tree))  # that checkout's kit package first
        kit = [py, "-m", "kit"]
        suffix = f" [{label}]" if opts.vs else ""
        commands[f"kit --help{suffix}"] = ([*kit, "--help"], env)
        commands[f"kit plan{suffix}"] = ([*kit, "plan", stack], env)
        commands[f"kit render{suffix}"] = ([*kit, "render", stack], env)
    for argv, env in commands.values():  # warm-up: file cache, .pyc files
        subprocess.run(argv, capture_output=True, env=env, check=True)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(opts.n):
        for name, (argv, env) in commands.items():
            times[name].append(timed(argv, env))
    base = statistics.median(times["python -c pass"])
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"{opts.n} runs each, interleaved; medians of whole-process wall time ({opts.stack})")
    print(f"{'command':<24} {'median':>8} {'added':>8}  heavy modules imported")
    for name, (argv, env) in commands.items():
        heavy = ", ".join(imported(argv, env)) if name != "python -c pass" else ""
        print(f"{name:<24} {med[name]:>7.3f}s {med[name] - base:>7.3f}s  {heavy or '-'}")
    if opts.vs:
        print("added time, vs / this:")
        for cmd in ("kit --help", "kit plan", "kit render"):
            this, vs = med[f"{cmd} [this]"] - base, med[f"{cmd} [vs]"] - base
            print(f"  {cmd:<12} {vs / this:5.1f}x")


if __name__ == "__main__":
    main()
