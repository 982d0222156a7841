"""vLLM's command line as the double parses it: `vllm serve` with the flags of the imitated
version (argparse, like vLLM's FlexibleArgumentParser), `vllm --version`, and the entry point."""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys

from .config import Config
from .env import imitated_version, version_tuple
from .failures import unrecognized_args_text
from .logs import err
from .server import Server


def _int_or_human(value: str) -> int:
    """--max-model-len accepts 32768 or human-readable 32k / 1m (vLLM >= 0.10)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*", value)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid int value: '{value}'")
    num, suffix = float(m.group(1)), m.group(2)
    mult = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3}[suffix.lower()]
    if suffix.isupper():
        mult = {"K": 1024, "M": 1024**2, "G": 1024**3}[suffix]
    return int(num * mult)


def build_parser(version: str) -> argparse.ArgumentParser:
    v = version_tuple(version)
    root = argparse.ArgumentParser(
        prog="vllm",
        description="vLLM CLI (kit engine double: not vLLM)",
        allow_abbrev=False,
    )
    root.add_argument("-v", "--version", action="version", version=version)
    sub = root.add_subparsers(
        dest="subparser", metavar="{chat,complete,serve,bench,collect-env,run-batch}"
    )
    for name in ("chat", "complete"):
        sub.add_parser(name, help="(not simulated)", allow_abbrev=False)
    p = sub.add_parser(
        "serve",
        help="Start the (simulated) vLLM OpenAI Compatible API server.",
        usage="vllm serve [model_tag] [options]",
        allow_abbrev=False,
    )
    for name in ("bench", "collect-env", "run-batch"):
        sub.add_parser(name, help="(not simulated)", allow_abbrev=False)

    bool_flag = argparse.BooleanOptionalAction
    p.add_argument("model_tag", nargs="?", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--served-model-name", nargs="+", default=None)
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", nargs="+", default=None)
    p.add_argument("--uvicorn-log-level", default="info")
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    p.add_argument("--pipeline-parallel-size", "-pp", type=int, default=1)
    p.add_argument("--data-parallel-size", "-dp", type=int, default=1)
    p.add_argument("--distributed-executor-backend", default=None)
    p.add_argument("--enable-expert-parallel", action=bool_flag, default=False)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--max-model-len", type=_int_or_human, default=None)
    p.add_argument("--max-num-seqs", type=int, default=None)
    p.add_argument("--max-num-batched-tokens", type=int, default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--kv-cache-dtype", default="auto")
    p.add_argument("--quantization", "-q", default=None)
    p.add_argument("--trust-remote-code", action=bool_flag, default=False)
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--tokenizer-mode", default="auto")
    p.add_argument("--revision", default=None)
    p.add_argument("--download-dir", default=None)
    p.add_argument("--load-format", default="auto")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--swap-space", type=float, default=4)
    p.add_argument("--block-size", type=int, default=None)
    p.add_argument("--enforce-eager", action=bool_flag, default=False)
    p.add_argument("--enable-prefix-caching", action=bool_flag, default=None)
    p.add_argument("--enable-chunked-prefill", action=bool_flag, default=None)
    p.add_argument("--chat-template", default=None)
    p.add_argument("--generation-config", default="auto")
    p.add_argument("--limit-mm-per-prompt", default=None)
    p.add_argument("--hf-overrides", default=None)
    p.add_argument("--override-pooler-config", default=None)
    p.add_argument("--pooler-config", default=None)
    p.add_argument("--reasoning-parser", default=None)
    p.add_argument("--tool-call-parser", default=None)
    p.add_argument("--enable-auto-tool-choice", action=bool_flag, default=False)
    p.add_argument("--enable-log-requests", action=bool_flag, default=False)
    p.add_argument("--disable-log-requests", action="store_true", default=False)
    p.add_argument("--disable-log-stats", action="store_true", default=False)
    p.add_argument("--disable-uvicorn-access-log", action="store_true", default=False)
    if v < (0, 10):
        p.add_argument("--enable-reasoning", action="store_true", default=False)
    if v < (0, 13):
        p.add_argument("--task", default=None)
    if v >= (0, 9, 2):
        p.add_argument("--headless", action="store_true", default=False)
    if v >= (0, 11, 1):  # vLLM's native multi-node launch (multinode.py)
        p.add_argument("--nnodes", "-n", type=int, default=1)
        p.add_argument("--node-rank", "-r", type=int, default=0)
        p.add_argument("--master-addr", default="127.0.0.1")
        p.add_argument("--master-port", type=int, default=29501)
    if v >= (0, 10, 1):
        p.add_argument("--runner", default="auto", choices=["auto", "generate", "pooling", "draft"])
        p.add_argument(
            "--convert", default="auto", choices=["auto", "none", "embed", "classify", "reward"]
        )
    p.set_defaults(kit_serve=True)
    return root


def non_default_args(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> dict:
    serve = None
    for action in parser._actions:  # the subparsers action
        if isinstance(action, argparse._SubParsersAction):
            serve = action.choices["serve"]
    out_args: dict = {}
    if serve is None:
        return out_args
    for action in serve._actions:
        dest = action.dest
        if dest in ("help",) or not hasattr(ns, dest):
            continue
        val = getattr(ns, dest)
        if val != action.default:
            out_args[dest] = val
    if "model_tag" in out_args and "model" not in out_args:
        out_args["model"] = out_args["model_tag"]
    return out_args


def _exit_now(signum, frame) -> None:  # until the event loop installs its own handlers
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)
    argv = sys.argv[1:] if argv is None else argv
    version = imitated_version()
    parser = build_parser(version)
    ns, extras = parser.parse_known_args(argv)
    if extras:
        # argparse reports unknown options of a subcommand from the top-level parser
        err(unrecognized_args_text(" ".join(extras)))
        return 2
    if not getattr(ns, "kit_serve", False):
        if ns.subparser is None:
            parser.print_help()
            return 0
        err(
            f"kit-engine-double: only `vllm serve` and `vllm --version` are simulated, not `vllm {ns.subparser}`\n"
        )
        return 2
    cfg = Config(ns, version, non_default_args(parser, ns))
    try:
        return asyncio.run(Server(cfg).run())
    except KeyboardInterrupt:
        return 0
