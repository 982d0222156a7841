#!/usr/bin/env python3
"""Check rendered `vllm serve` command lines against the REAL argument parser of a vLLM install.

    check-vllm-flags.py [FILE]            # FILE or stdin: JSON
    check-vllm-flags.py --image kit-real-vllm-cpu:0.32.0 FILE   # run inside that image
    check-vllm-flags.py --python /path/to/venv/bin/python FILE  # run with that interpreter

Input JSON, any of:
    [["/models/m", "--port", "8000", ...], ...]               argv lists
    [{"name": "svc", "argv": [...]}, ...]                     named
    {"svc": [...], ...}                                       named
A leading "vllm", "serve" (or "serve") in an argv is dropped.

For each command line the parser is built the way `vllm` builds it (vllm/entrypoints/cli/main.py:
a FlexibleArgumentParser with subcommands, the `serve` subparser from
vllm.entrypoints.cli.serve.cmd_init()), then:
  1. parse    parser.parse_args(["serve", *argv])        argparse errors: unknown flag, bad choice
  2. validate ServeSubcommand.validate(args)              vLLM's own cross-flag checks
  3. names    --reasoning-parser / --tool-call-parser against vLLM's parser registries
              (ReasoningParserManager, ToolParserManager): argparse checks reasoning parser
              names only up to ~0.12 and tool parser names never
  4. engine   EngineArgs.from_cli_args(args)              only with --engine: builds the engine
              arguments dataclass; from vLLM ~0.11 its __post_init__ resolves the model
              (a missing local folder is then tried as a hub id and fails offline), so it is
              only meaningful where the model folders exist
No server is started; without --engine no model is read and nothing is downloaded.

--list-parsers prints the registered reasoning and tool-call parser names as JSON instead.

Output: one line per command line (`--json` for a JSON report) on stdout.
Exit 0 if all are accepted, 1 if any is rejected, 2 if vLLM cannot be loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any


def _load_input(path: str | None) -> list[tuple[str, list[str]]]:
    text = Path(path).read_text() if path and path != "-" else sys.stdin.read()
    data = json.loads(text)
    items: list[tuple[str, list[str]]] = []
    if isinstance(data, dict):
        items = [(str(k), list(v)) for k, v in data.items()]
    elif isinstance(data, list):
        for i, entry in enumerate(data):
            if isinstance(entry, dict):
                items.append((str(entry.get("name", i)), list(entry["argv"])))
            else:
                items.append((str(i), list(entry)))
    else:
        raise SystemExit("check-vllm-flags: input must be a JSON list or object")
    out = []
    for name, argv in items:
        argv = [str(a) for a in argv]
        if argv[:2] == ["vllm", "serve"]:
            argv = argv[2:]
        elif argv[:1] == ["serve"]:
            argv = argv[1:]
        out.append((name, argv))
    return out


@contextlib.contextmanager
def _stdout_to_stderr():
    """vLLM logs to stdout; keep stdout for the report (fd level: C code prints too)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _build_parser() -> tuple[Any, Any, str]:
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    import vllm
    import vllm.entrypoints.cli.serve as serve_mod

    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:  # vLLM < 0.13
        from vllm.utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm", description="vLLM CLI (check-vllm-flags)")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    serve_cmd = None
    for cmd in serve_mod.cmd_init():
        cmd.subparser_init(subparsers).set_defaults(dispatch_function=cmd.cmd)
        if cmd.name == "serve":
            serve_cmd = cmd
    if serve_cmd is None:
        raise RuntimeError("vllm.entrypoints.cli.serve.cmd_init() has no 'serve' command")
    return parser, serve_cmd, getattr(vllm, "__version__", "?")


_REGISTRIES = {
    "reasoning": (
        ("vllm.reasoning",),
        "ReasoningParserManager",
        ("reasoning_parsers", "lazy_parsers"),
    ),
    "tool": (
        ("vllm.tool_parsers", "vllm.entrypoints.openai.tool_parsers"),
        "ToolParserManager",
        ("tool_parsers", "lazy_parsers"),
    ),
}
_NAMES_CACHE: dict[str, set[str] | None] = {}


def _registered(kind: str) -> set[str] | None:
    """Names registered with vLLM's reasoning or tool parser manager (None: not found)."""
    if kind in _NAMES_CACHE:
        return _NAMES_CACHE[kind]
    import importlib

    modules, cls_name, attrs = _REGISTRIES[kind]
    names = None
    for module in modules:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        mgr = getattr(mod, cls_name, None)
        if mgr is None:
            continue
        names = set()
        for attr in attrs:
            names |= set(getattr(mgr, attr, None) or {})
        break
    _NAMES_CACHE[kind] = names
    return names


def _check_names(args: Any) -> str | None:
    for kind, attr in (("reasoning", "reasoning_parser"), ("tool", "tool_call_parser")):
        name = getattr(args, attr, None)
        if not name:
            continue
        known = _registered(kind)
        if known is not None and name not in known:
            return (
                f"unknown {kind} parser {name!r} for --{attr.replace('_', '-')}; "
                f"registered: {', '.join(sorted(known))}"
            )
    return None


def _check_one(parser: Any, serve_cmd: Any, argv: list[str], engine: bool) -> dict[str, Any]:
    from vllm.engine.arg_utils import EngineArgs

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser.parse_args(["serve", *argv])
    except SystemExit as e:
        lines = [ln for ln in err.getvalue().strip().splitlines() if ln.strip()]
        # drop argparse's usage block: keep from the "prog: error:" line on
        at = next((i for i, ln in enumerate(lines) if ": error:" in ln), None)
        if at is not None:
            lines = lines[at:]
        msg = " ".join(ln.strip() for ln in lines) if lines else f"argparse exited with {e.code}"
        return {"ok": False, "stage": "parse", "error": msg}
    except Exception as e:
        return {"ok": False, "stage": "parse", "error": f"{type(e).__name__}: {e}"}
    if getattr(args, "model_tag", None) is not None:
        args.model = args.model_tag  # as ServeSubcommand.cmd does
    try:
        serve_cmd.validate(args)
    except SystemExit as e:
        return {"ok": False, "stage": "validate", "error": err.getvalue().strip() or str(e)}
    except Exception as e:
        return {"ok": False, "stage": "validate", "error": f"{type(e).__name__}: {e}"}
    try:
        problem = _check_names(args)
    except Exception as e:
        problem = f"cannot read the parser registries: {type(e).__name__}: {e}"
    if problem:
        return {"ok": False, "stage": "names", "error": problem}
    if not engine:
        return {"ok": True, "stage": "names", "error": None}
    try:
        EngineArgs.from_cli_args(args)
    except Exception as e:
        return {"ok": False, "stage": "engine", "error": f"{type(e).__name__}: {e}"}
    return {"ok": True, "stage": "engine", "error": None}


def _reexec(ns: argparse.Namespace) -> int:
    me = Path(__file__).resolve()
    data = Path(ns.file).read_bytes() if ns.file and ns.file != "-" else sys.stdin.buffer.read()
    flags = [
        f
        for f, on in (
            ("--json", ns.json),
            ("--engine", ns.engine),
            ("--list-parsers", ns.list_parsers),
        )
        if on
    ]
    if ns.python:
        cmd = [ns.python, str(me), *flags, "-"]
    else:
        cmd = [
            "docker",
            "run",
            "--rm",
            "-i",
            "--network",
            "none",
            "-v",
            f"{me}:/check-vllm-flags.py:ro",
            "--entrypoint",
            "python",
            ns.image,
            "/check-vllm-flags.py",
            *flags,
            "-",
        ]
    return subprocess.run(cmd, input=data).returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", nargs="?", help="JSON file (default: stdin)")
    ap.add_argument("--json", action="store_true", help="print a JSON report")
    ap.add_argument(
        "--engine", action="store_true", help="also build EngineArgs (reads the model; see above)"
    )
    ap.add_argument(
        "--list-parsers",
        action="store_true",
        help="print the registered reasoning/tool-call parser names (JSON)",
    )
    ap.add_argument("--image", help="run inside this Docker image (e.g. kit-real-vllm-cpu:0.32.0)")
    ap.add_argument("--python", help="run with this Python interpreter (a venv with vLLM)")
    ns = ap.parse_args()
    if ns.image or ns.python:
        return _reexec(ns)

    items = [] if ns.list_parsers else _load_input(ns.file)
    try:
        with _stdout_to_stderr():
            parser, serve_cmd, version = _build_parser()
    except Exception as e:
        detail = "".join(traceback.format_exception_only(type(e), e)).strip()
        if ns.json:
            print(json.dumps({"vllm": None, "load_error": detail}))
        else:
            print(f"cannot load vLLM's serve parser: {detail}")
        return 2

    if ns.list_parsers:
        with _stdout_to_stderr():
            names = {k: sorted(_registered(k) or []) for k in _REGISTRIES}
        print(json.dumps({"vllm": version, **names}))
        return 0
    results = []
    with _stdout_to_stderr():
        for name, argv in items:
            results.append(
                {"name": name, "argv": argv, **_check_one(parser, serve_cmd, argv, ns.engine)}
            )
    if ns.json:
        print(json.dumps({"vllm": version, "results": results}, indent=1))
    else:
        for r in results:
            verdict = "ACCEPT" if r["ok"] else f"REJECT ({r['stage']}): {r['error']}"
            print(f"vllm {version}  {r['name']}: {verdict}")
            if not r["ok"]:
                print(f"    vllm serve {' '.join(r['argv'])}")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
