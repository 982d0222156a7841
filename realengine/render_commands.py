#!/usr/bin/env python3
"""Print the engine command lines the kit renders for every shipped stack, as JSON for
scripts/check-vllm-flags.py.

    .venv/bin/python realengine/render_commands.py [--vllm-version X] [STACK.yaml ...]

--vllm-version X re-renders each stack as if it pinned vLLM X (defaults.vllm_version and the
image tag are replaced in memory; the stack files are not touched). Stacks the kit refuses
for that version are reported on stderr and skipped. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kit.plan import build_plan  # noqa: E402
from kit.spec import parse_stack  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stacks", nargs="*")
    ap.add_argument("--vllm-version")
    ns = ap.parse_args()
    paths = [Path(p) for p in ns.stacks] or sorted((ROOT / "stacks").glob("*.yaml"))
    out = []
    for path in paths:
        data = yaml.safe_load(path.read_text())
        if ns.vllm_version:
            d = data.setdefault("defaults", {})
            d["vllm_version"] = ns.vllm_version
            repo = str(d.get("image", "vllm/vllm-openai:x")).rsplit(":", 1)[0]
            d["image"] = f"{repo}:v{ns.vllm_version}"
        try:
            stack = parse_stack(
                yaml.safe_dump(data), source=str(path), default_name=path.stem, base_dir=path.parent
            )
            plan = build_plan(stack)
        except Exception as e:
            print(f"render_commands: {path.stem}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        for s in plan.services:
            if s.nodes:  # a model over several hosts: each host's vllm serve (not ray start)
                for part in s.nodes:
                    if part.entrypoint[0] != "ray":
                        out.append({"name": f"{path.stem}/{part.name}", "argv": list(part.command)})
                continue
            out.append({"name": f"{path.stem}/{s.name}", "argv": list(s.engine_args)})
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
