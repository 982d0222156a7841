#!/usr/bin/env python3
"""kit engine double: a stand-in for vLLM's OpenAI-compatible server (`vllm serve ...`).

FOR KIT INTEGRATION TESTS ONLY. THIS IS NOT vLLM. It loads no model and needs no GPU: it parses
vLLM's serve flags, validates the GPU plan and the model folder the way vLLM does, prints
vLLM-like logs (with vLLM's real error texts for each failure cause), keeps its port closed while
"loading", then serves a deterministic OpenAI-compatible API on an asyncio HTTP/1.1 server.

Python 3.11+ standard library only: the image ships this single file as /usr/local/bin/vllm.
Environment knobs are documented in engine_double/README.md and in `ENV_KNOBS` below.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import math
import os
import random
import re
import signal
import socket
import struct
import sys
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator
from email.utils import formatdate
from functools import lru_cache
from string import Template
from typing import ClassVar

PROCESS_START = time.monotonic()

FAIL_CAUSES = (
    "oom",
    "free_memory",
    "world_size",
    "heads",
    "model_missing",
    "gated_401",
    "trust_remote_code",
    "unrecognized_args",
)

ENV_KNOBS = {
    "KIT_DOUBLE_VLLM_VERSION": "vLLM version to imitate (default 0.11.0)",
    "KIT_DOUBLE_LOAD_SECONDS": "seconds the port stays closed while 'loading' (float, default 2)",
    "KIT_DOUBLE_GPUS": "GPUs in the node when NVIDIA_VISIBLE_DEVICES is unset or 'all' (default 8)",
    "KIT_DOUBLE_FAIL": "force a startup failure: " + ", ".join(FAIL_CAUSES),
    "KIT_DOUBLE_EXIT_CODE": "exit code for forced failures (default 1; 2 for unrecognized_args) and crashes (default 0)",
    "KIT_DOUBLE_CRASH_AFTER": "seconds after process start at which the engine dies of CUDA OOM",
    "KIT_DOUBLE_NEVER_READY": "1: never open the port, keep logging",
    "KIT_DOUBLE_HTTP_503": "1: port opens but /health and every API route answer 503",
    "KIT_DOUBLE_TOKEN_DELAY_MS": "delay per generated token (default 0)",
    "KIT_DOUBLE_EMBED_DIM": "embedding dimension (default: config.json hidden_size, else 384)",
    "KIT_DOUBLE_LOG_INTERVAL": "seconds between 'still loading' lines in never-ready mode (default 5)",
    "KIT_DOUBLE_GPU_MEMORY_GIB": "total memory per simulated GPU in GiB (default 79.19, an H100 80GB)",
    "KIT_DOUBLE_ERROR_SHAPE": "'nested' or 'flat' error JSON (default by version: nested from 0.10.1)",
}

SITE = "/usr/local/lib/python3.12/dist-packages"
DEFAULT_MODEL = "Qwen/Qwen3-0.6B"  # vLLM >= 0.10 serves this when no model is given


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------


def version_tuple(v: str) -> tuple[int, ...]:
    nums = []
    for part in v.split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        nums.append(int(m.group()))
    return tuple(nums) or (0,)


def env_number(name: str, default, kind: type):
    """The variable `name` read as `kind` (int or float); `default` when unset or malformed."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        return default


def env_float(name: str, default: float) -> float:
    return env_number(name, default, float)


def env_int(name: str, default: int) -> int:
    return env_number(name, default, int)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def ts() -> str:
    return time.strftime("%m-%d %H:%M:%S")


def out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def err(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def visible_gpu_count() -> int:
    """GPUs the container sees: NVIDIA_VISIBLE_DEVICES (set by the engine for device_ids
    reservations), narrowed by CUDA_VISIBLE_DEVICES when that is set."""
    default = env_int("KIT_DOUBLE_GPUS", 8)
    nv = os.environ.get("NVIDIA_VISIBLE_DEVICES")
    if nv is None or nv.strip().lower() in ("", "all"):
        count = default
    elif nv.strip().lower() in ("none", "void"):
        count = 0
    else:
        count = len([d for d in nv.split(",") if d.strip()])
    cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cuda is not None:
        count = min(count, len([d for d in cuda.split(",") if d.strip()]))
    return count


def words_of(text: str) -> list[str]:
    return text.split()


_WORD_RE = re.compile(r"[a-z0-9]+")


def word_set(text: str) -> frozenset[str]:
    return frozenset(_WORD_RE.findall(text.lower()))


def relevance(query: str, doc: str) -> float:
    """Deterministic relevance in [0, 1]: Jaccard overlap of lower-cased word sets."""
    q, d = word_set(query), word_set(doc)
    if not q or not d:
        return 0.0
    return len(q & d) / len(q | d)


# ---------------------------------------------------------------------------------------------
# vLLM's log / error texts for each failure cause (vLLM 0.11 layout, `vllm serve` in a container)
#
# Sources (key lines verbatim): vllm/config/parallel.py (world size), vllm/config/model.py
# verify_with_parallel_config (heads), vllm/v1/worker/gpu_worker.py init_device (free memory),
# torch.cuda OutOfMemoryError text, huggingface_hub validate_repo_id + GatedRepoError and
# transformers cached_files (model path / gated repo), transformers resolve_trust_remote_code
# (as seen wrapped in a pydantic ValidationError in a vLLM 0.11.0 log), argparse (unrecognized).
# Tracebacks are excerpts: a few middle frames are left out to keep each cause under 40 lines.
# ---------------------------------------------------------------------------------------------

# the top of every API server traceback
_API_TOP = """\
${api} Traceback (most recent call last):
${api}   File "/usr/local/bin/vllm", line 10, in <module>
${api}     sys.exit(main())
${api}              ^^^^^^
"""

_API_HEAD = (
    _API_TOP
    + """\
${api}   File "${site}/vllm/entrypoints/cli/main.py", line 54, in main
${api}     args.dispatch_function(args)
${api}   File "${site}/vllm/entrypoints/cli/serve.py", line 57, in cmd
${api}     uvloop.run(run_server(args))
${api}   File "${site}/vllm/entrypoints/openai/api_server.py", line 1884, in run_server
${api}     await run_server_worker(listen_address, sock, args, **uvicorn_kwargs)
${api}   File "${site}/vllm/entrypoints/openai/api_server.py", line 206, in build_async_engine_client_from_engine_args
${api}     vllm_config = engine_args.create_engine_config(usage_context=usage_context)
${api}                   ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
"""
)

_PYDANTIC_INIT = """\
${api}   File "${site}/pydantic/_internal/_dataclasses.py", line 123, in __init__
${api}     s.__pydantic_validator__.validate_python(ArgsKwargs(args, kwargs), self_instance=s)
"""

_SPECULATORS_PROBE = """\
${api}   File "${site}/vllm/engine/arg_utils.py", line 1120, in create_engine_config
${api}     (self.model, self.tokenizer, self.speculative_config) = maybe_override_with_speculators(
${api}                                                             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
${api}   File "${site}/vllm/transformers_utils/config.py", line 482, in maybe_override_with_speculators
${api}     config_dict, _ = PretrainedConfig.get_config_dict(
${api}                      ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
${api}   File "${site}/transformers/configuration_utils.py", line 721, in _get_config_dict
${api}     resolved_config_file = cached_file(
${api}                            ^^^^^^^^^^^^
"""

# torch's CUDA OOM text, at startup (profile run) and at runtime
_TORCH_OOM = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate ${alloc}. GPU 0 has a total capacity of ${cap} of which ${oom_free} is free. Process ${proc} has ${inuse} memory in use. Of the allocated memory ${by_torch} is allocated by PyTorch, and ${reserved} is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"


def _engine_core_startup_failure(frames: str, error: str) -> str:
    """EngineCore dies while starting: its logged traceback (`frames` between the common first
    and last ones, then `error`), the re-raise in the engine process, then the API server's
    "initialization failed"."""
    return (
        """\
${core} ERROR ${ts} [core.py:708] EngineCore failed to start.
${core} ERROR ${ts} [core.py:708] Traceback (most recent call last):
${core} ERROR ${ts} [core.py:708]   File "${site}/vllm/v1/engine/core.py", line 699, in run_engine_core
${core} ERROR ${ts} [core.py:708]     engine_core = EngineCoreProc(*args, **kwargs)
${core} ERROR ${ts} [core.py:708]                   ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
"""
        + frames
        + "${core} ERROR ${ts} [core.py:708] "
        + error
        + """
${core} Process EngineCore_DP0:
${core} Traceback (most recent call last):
${core}   File "/usr/lib/python3.12/multiprocessing/process.py", line 314, in _bootstrap
${core}     self.run()
${core}   File "${site}/vllm/v1/engine/core.py", line 712, in run_engine_core
${core}     raise e
${core} """
        + error
        + "\n"
        + _API_TOP
        + """\
${api}   File "${site}/vllm/v1/engine/utils.py", line 782, in wait_for_engine_startup
${api}     raise RuntimeError("Engine core initialization failed. "
${api} RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
"""
    )


# uvicorn's shutdown lines: on SIGTERM / SIGINT, and after a runtime crash
_UVICORN_SHUTDOWN = """\
${api} INFO:     Shutting down
${api} INFO:     Waiting for application shutdown.
${api} INFO:     Application shutdown complete.
${api} INFO:     Finished server process [${pid}]
"""

FAILURE_TEMPLATES: dict[str, str] = {
    "world_size": _API_HEAD
    + """\
${api}   File "${site}/vllm/engine/arg_utils.py", line 1329, in create_engine_config
${api}     parallel_config = ParallelConfig(
${api}                       ^^^^^^^^^^^^^^^
"""
    + _PYDANTIC_INIT
    + """\
${api} pydantic_core._pydantic_core.ValidationError: 1 validation error for ParallelConfig
${api}   Value error, World size (${world}) is larger than the number of available GPUs (${gpus}) in this node. If this is intentional and you are using:
${api} - ray, set '--distributed-executor-backend ray'.
${api} - multiprocessing, set '--nnodes' appropriately. [type=value_error, input_value=ArgsKwargs((), {'pipeline...'_api_process_rank': 0}), input_type=ArgsKwargs]
${api}     For further information visit https://errors.pydantic.dev/2.11/v/value_error
""",
    "heads": _API_HEAD
    + """\
${api}   File "${site}/vllm/engine/arg_utils.py", line 1440, in create_engine_config
${api}     config = VllmConfig(
${api}              ^^^^^^^^^^^
"""
    + _PYDANTIC_INIT
    + """\
${api} pydantic_core._pydantic_core.ValidationError: 1 validation error for VllmConfig
${api}   Value error, Total number of attention heads (${heads}) must be divisible by tensor parallel size (${tp}). [type=value_error, input_value=ArgsKwargs((), {'model_co...additional_config': {}}), input_type=ArgsKwargs]
${api}     For further information visit https://errors.pydantic.dev/2.11/v/value_error
""",
    "trust_remote_code": _API_HEAD
    + """\
${api}   File "${site}/vllm/engine/arg_utils.py", line 1142, in create_engine_config
${api}     model_config = self.create_model_config()
${api}                    ^^^^^^^^^^^^^^^^^^^^^^^^^^
${api}   File "${site}/vllm/engine/arg_utils.py", line 994, in create_model_config
${api}     return ModelConfig(
${api}            ^^^^^^^^^^^^
"""
    + _PYDANTIC_INIT
    + """\
${api} pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig
${api}   Value error, The repository ${model} contains custom code which must be executed to correctly load the model. You can inspect the repository content at ${inspect_at} .
${api}  You can inspect the repository content at https://hf.co/${model}.
${api} Please pass the argument `trust_remote_code=True` to allow custom code to be run. [type=value_error, input_value=ArgsKwargs((), {'model': ...rocessor_plugin': None}), input_type=ArgsKwargs]
${api}     For further information visit https://errors.pydantic.dev/2.11/v/value_error
""",
    "model_missing": """\
${api} Traceback (most recent call last):
${api}   File "${site}/transformers/utils/hub.py", line 479, in cached_files
${api}     hf_hub_download(
${api}   File "${site}/huggingface_hub/utils/_validators.py", line 154, in validate_repo_id
${api}     raise HFValidationError(
${api} huggingface_hub.errors.HFValidationError: Repo id must be in the form 'repo_name' or 'namespace/repo_name': '${model}'. Use `repo_type` argument if needed.
${api_blank}
${api} During handling of the above exception, another exception occurred:
${api_blank}
"""
    + _API_HEAD
    + _SPECULATORS_PROBE
    + """\
${api}   File "${site}/transformers/utils/hub.py", line 532, in cached_files
${api}     _get_cache_file_to_return(path_or_repo_id, filename, cache_dir, revision, repo_type)
${api}   File "${site}/transformers/utils/hub.py", line 143, in _get_cache_file_to_return
${api}     resolved_file = try_to_load_from_cache(
${api}                     ^^^^^^^^^^^^^^^^^^^^^^^
${api}   File "${site}/huggingface_hub/utils/_validators.py", line 154, in validate_repo_id
${api}     raise HFValidationError(
${api} huggingface_hub.errors.HFValidationError: Repo id must be in the form 'repo_name' or 'namespace/repo_name': '${model}'. Use `repo_type` argument if needed.
""",
    "gated_401": """\
${api} huggingface_hub.errors.GatedRepoError: 401 Client Error. (Request ID: ${req_id})
${api_blank}
${api} Cannot access gated repo for url https://huggingface.co/${repo}/resolve/main/config.json.
${api} Access to model ${repo} is restricted. You must have access to it and be authenticated to access it. Please log in.
${api_blank}
${api} The above exception was the direct cause of the following exception:
${api_blank}
"""
    + _API_HEAD
    + _SPECULATORS_PROBE
    + """\
${api}   File "${site}/transformers/utils/hub.py", line 543, in cached_files
${api}     raise OSError(
${api} OSError: You are trying to access a gated repo.
${api} Make sure to have access to it at https://huggingface.co/${repo}.
${api} 401 Client Error. (Request ID: ${req_id})
${api_blank}
${api} Cannot access gated repo for url https://huggingface.co/${repo}/resolve/main/config.json.
${api} Access to model ${repo} is restricted. You must have access to it and be authenticated to access it. Please log in.
""",
    "free_memory": _engine_core_startup_failure(
        """\
${core} ERROR ${ts} [core.py:708]   File "${site}/vllm/v1/engine/core.py", line 83, in __init__
${core} ERROR ${ts} [core.py:708]     self.model_executor = executor_class(vllm_config)
${core} ERROR ${ts} [core.py:708]                           ^^^^^^^^^^^^^^^^^^^^^^^^^^^
${core} ERROR ${ts} [core.py:708]   File "${site}/vllm/executor/executor_base.py", line 54, in __init__
${core} ERROR ${ts} [core.py:708]     self._init_executor()
${core} ERROR ${ts} [core.py:708]   File "${site}/vllm/executor/uniproc_executor.py", line 54, in _init_executor
${core} ERROR ${ts} [core.py:708]     self.collective_rpc("init_device")
${core} ERROR ${ts} [core.py:708]   File "${site}/vllm/worker/worker_base.py", line 259, in init_device
${core} ERROR ${ts} [core.py:708]     self.worker.init_device()  # type: ignore
${core} ERROR ${ts} [core.py:708]     ^^^^^^^^^^^^^^^^^^^^^^^^^
${core} ERROR ${ts} [core.py:708]   File "${site}/vllm/v1/worker/gpu_worker.py", line 185, in init_device
${core} ERROR ${ts} [core.py:708]     raise ValueError(
""",
        "ValueError: Free memory on device (${free}/${total} GiB) on startup is less than desired GPU memory utilization (${util}, ${requested} GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.",
    ),
    "oom": _engine_core_startup_failure(
        """\
${core} ERROR ${ts} [core.py:708]   File "${site}/vllm/v1/engine/core.py", line 498, in __init__
${core} ERROR ${ts} [core.py:708]     super().__init__(vllm_config, executor_class, log_stats,
${core} ERROR ${ts} [core.py:708]   File "${site}/vllm/v1/engine/core.py", line 92, in __init__
${core} ERROR ${ts} [core.py:708]     self._initialize_kv_caches(vllm_config)
${core} ERROR ${ts} [core.py:708]   File "${site}/vllm/v1/engine/core.py", line 190, in _initialize_kv_caches
${core} ERROR ${ts} [core.py:708]     self.model_executor.determine_available_memory())
${core} ERROR ${ts} [core.py:708]     ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
${core} ERROR ${ts} [core.py:708]   File "${site}/vllm/v1/worker/gpu_worker.py", line 263, in determine_available_memory
${core} ERROR ${ts} [core.py:708]     self.model_runner.profile_run()
${core} ERROR ${ts} [core.py:708]   File "${site}/vllm/v1/worker/gpu_model_runner.py", line 3361, in profile_run
${core} ERROR ${ts} [core.py:708]     = self._dummy_run(self.max_num_tokens, is_profile=True)
${core} ERROR ${ts} [core.py:708]       ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
${core} ERROR ${ts} [core.py:708]   File "${site}/torch/nn/modules/module.py", line 1784, in _call_impl
${core} ERROR ${ts} [core.py:708]     return forward_call(*args, **kwargs)
${core} ERROR ${ts} [core.py:708]            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
""",
        _TORCH_OOM,
    ),
    "unrecognized_args": """\
usage: vllm [-h] [-v] {chat,complete,serve,bench,collect-env,run-batch} ...
vllm: error: unrecognized arguments: ${bad_args}
""",
}

# printed when KIT_DOUBLE_CRASH_AFTER fires after the server is up (engine dies mid-service)
RUNTIME_CRASH_TEMPLATE = (
    """\
${core} ERROR ${ts} [core.py:710] EngineCore encountered a fatal error.
${core} ERROR ${ts} [core.py:710] Traceback (most recent call last):
${core} ERROR ${ts} [core.py:710]   File "${site}/vllm/v1/engine/core.py", line 701, in run_engine_core
${core} ERROR ${ts} [core.py:710]     engine_core.run_busy_loop()
${core} ERROR ${ts} [core.py:710]   File "${site}/vllm/v1/engine/core.py", line 728, in run_busy_loop
${core} ERROR ${ts} [core.py:710]     self._process_engine_step()
${core} ERROR ${ts} [core.py:710]   File "${site}/vllm/v1/engine/core.py", line 754, in _process_engine_step
${core} ERROR ${ts} [core.py:710]     outputs, model_executed = self.step_fn()
${core} ERROR ${ts} [core.py:710]                               ^^^^^^^^^^^^^^
${core} ERROR ${ts} [core.py:710]   File "${site}/vllm/v1/worker/gpu_model_runner.py", line 2326, in execute_model
${core} ERROR ${ts} [core.py:710]     model_output = self.model(
${core} ERROR ${ts} [core.py:710]                    ^^^^^^^^^^^
${core} ERROR ${ts} [core.py:710] """
    + _TORCH_OOM
    + """
${api} ERROR ${ts} [async_llm.py:480] AsyncLLM output_handler failed.
${api} ERROR ${ts} [async_llm.py:480] Traceback (most recent call last):
${api} ERROR ${ts} [async_llm.py:480]   File "${site}/vllm/v1/engine/async_llm.py", line 439, in output_handler
${api} ERROR ${ts} [async_llm.py:480]     outputs = await engine_core.get_output_async()
${api} ERROR ${ts} [async_llm.py:480]               ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
${api} ERROR ${ts} [async_llm.py:480]   File "${site}/vllm/v1/engine/core_client.py", line 846, in get_output_async
${api} ERROR ${ts} [async_llm.py:480]     raise self._format_exception(outputs) from None
${api} ERROR ${ts} [async_llm.py:480] vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause.
${api} ERROR ${ts} [core_client.py:564] Engine core proc EngineCore_DP0 died unexpectedly, shutting down client.
"""
    + _UVICORN_SHUTDOWN
)


def render(template: str, ctx: dict[str, object]) -> str:
    return Template(template).substitute({k: str(v) for k, v in ctx.items()})


def _gib(x: float) -> str:
    return f"{x:.2f} GiB"


def oom_numbers(total_gib: float, seed: str) -> dict[str, str]:
    """Plausible, deterministic numbers for torch's CUDA OOM message."""
    h = zlib.crc32(seed.encode())
    alloc = [0.5, 1.0, 1.16, 2.0, 3.5][h % 5]
    free_mib = 64 + (h >> 3) % 900
    inuse = total_gib - free_mib / 1024
    reserved_mib = 100 + (h >> 7) % 800
    by_torch = inuse - 0.6 - reserved_mib / 1024
    return {
        "alloc": _gib(alloc),
        "cap": _gib(total_gib),
        "oom_free": f"{free_mib:.2f} MiB",
        "proc": str(1000 + h % 8000),
        "inuse": _gib(inuse),
        "by_torch": _gib(by_torch),
        "reserved": f"{reserved_mib:.2f} MiB",
    }


# ---------------------------------------------------------------------------------------------
# command line (argparse, like vLLM's FlexibleArgumentParser)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# the simulated engine configuration
# ---------------------------------------------------------------------------------------------


class Config:
    def __init__(self, ns: argparse.Namespace, version: str, nd_args: dict) -> None:
        self.version = version
        self.v = version_tuple(version)
        self.nd_args = nd_args
        self.model = ns.model_tag or ns.model or DEFAULT_MODEL
        self.served_names = list(ns.served_model_name or [self.model])
        self.host = ns.host
        self.port = ns.port
        keys = list(ns.api_key or [])
        if not keys and os.environ.get("VLLM_API_KEY"):
            keys = [os.environ["VLLM_API_KEY"]]
        self.api_keys = {f"Bearer {k}" for k in keys}
        self.tp = ns.tensor_parallel_size
        self.pp = ns.pipeline_parallel_size
        self.dp = ns.data_parallel_size
        self.util = ns.gpu_memory_utilization
        self.trust_remote_code = bool(ns.trust_remote_code)
        self.reasoning_parser = ns.reasoning_parser
        self.log_requests = bool(ns.enable_log_requests)
        self.dtype = ns.dtype
        self.quantization = ns.quantization
        self.enforce_eager = bool(ns.enforce_eager)
        self.kv_cache_dtype = ns.kv_cache_dtype
        self.max_num_batched_tokens = ns.max_num_batched_tokens
        self.gpus = visible_gpu_count()
        self.world = self.tp * self.pp
        self.gpu_total_gib = env_float("KIT_DOUBLE_GPU_MEMORY_GIB", 79.19)

        # model folder (local path or a hub id that we pretend is cached)
        self.model_dir: str | None = None
        self.config_json: dict = {}
        self.model_problem: str | None = None  # "missing" when vLLM could not resolve it
        if os.path.isdir(self.model):
            self.model_dir = self.model
            cfg_path = os.path.join(self.model, "config.json")
            if os.path.isfile(cfg_path):
                try:
                    with open(cfg_path, encoding="utf-8") as fh:
                        loaded = json.load(fh)
                    self.config_json = loaded if isinstance(loaded, dict) else {}
                except (OSError, ValueError):
                    self.config_json = {}
            else:
                self.model_problem = "missing"
        elif self.model.startswith(("/", "./", "../", "~")) or self.model.count("/") > 1:
            self.model_problem = "missing"
        text_cfg = self.config_json.get("text_config")
        text_cfg = text_cfg if isinstance(text_cfg, dict) else {}

        def cfg_get(key: str):
            val = self.config_json.get(key)
            return val if val is not None else text_cfg.get(key)

        self.num_heads = cfg_get("num_attention_heads") or cfg_get("n_head")
        self.hidden_size = cfg_get("hidden_size")
        arch = self.config_json.get("architectures") or []
        self.architecture = arch[0] if arch and isinstance(arch[0], str) else "Qwen3ForCausalLM"
        self.auto_map = self.config_json.get("auto_map")
        derived = cfg_get("max_position_embeddings")
        self.max_model_len = int(ns.max_model_len or derived or 32768)

        # runner: generate / embed / classify
        task = getattr(ns, "task", None)
        runner = getattr(ns, "runner", "auto")
        convert = getattr(ns, "convert", "auto")
        if task in ("embed", "embedding", "reward"):
            self.mode = "embed"
        elif task in ("score", "classify"):
            self.mode = "classify"
        elif task == "generate" or runner == "generate":
            self.mode = "generate"
        elif runner == "pooling":
            self.mode = "classify" if convert == "classify" else "embed"
        elif convert == "embed":
            self.mode = "embed"
        elif convert == "classify" or self.architecture.endswith(
            ("ForSequenceClassification", "ForClassification")
        ):
            self.mode = "classify"
        elif self.architecture.endswith("Model") and not self.architecture.endswith("LMHeadModel"):
            self.mode = "embed"
        else:
            self.mode = "generate"
        self.embed_dim = env_int("KIT_DOUBLE_EMBED_DIM", 0) or int(self.hidden_size or 384)
        self.reasoning_key = "reasoning" if self.v >= (0, 16) else "reasoning_content"
        shape = os.environ.get("KIT_DOUBLE_ERROR_SHAPE", "").strip().lower()
        self.nested_errors = shape == "nested" or (shape != "flat" and self.v >= (0, 10, 1))

    @property
    def supported_tasks(self) -> list[str]:
        return {
            "generate": ["generate"],
            "embed": ["encode", "embed"],
            "classify": ["encode", "classify", "score"],
        }[self.mode]

    def hub_repo(self) -> str:
        """The repo id vLLM would ask the hub for (for the gated 401 text)."""
        if not self.model.startswith("/"):
            return self.model
        parts = [p for p in self.model.split("/") if p]
        return "/".join(parts[-2:]) if len(parts) >= 2 else parts[-1]


# ---------------------------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------------------------

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

_date_cache = [0, b""]


def http_date() -> bytes:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True).encode()
    return _date_cache[1]


class Response:
    __slots__ = ("body", "content_type", "status")

    def __init__(self, status: int, body: bytes = b"", content_type: bytes = b"application/json"):
        self.status = status
        self.body = body
        self.content_type = content_type


def json_response(obj: object, status: int = 200) -> Response:
    return Response(status, json.dumps(obj, separators=(",", ":")).encode())


class Request:
    __slots__ = ("body", "headers", "method", "path", "peer", "target")

    def __init__(self, method, target, headers, body, peer):
        self.method = method
        self.target = target
        self.path = target.split("?", 1)[0]
        self.headers = headers
        self.body = body
        self.peer = peer


class StreamedResponse(Exception):
    """Raised internally when a handler already wrote its (streamed) response."""


class ClientGone(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# generation helpers (deterministic output: one "token" is one word)
# ---------------------------------------------------------------------------------------------

VOCAB = (  # noqa: SIM905
    "the quick engine double answers every request with calm deterministic words while real "
    "GPUs rest somewhere else so tests stay fast and readable tokens flow one by one across "
    "the wire like a river of plain text that never changes between runs"
).split()
REASONING_VOCAB = (  # noqa: SIM905
    "let me think about this request carefully first then answer it step by step with care "
    "and check each part before writing the final reply"
).split()


def gen_words(seed_text: str, n: int, vocab=VOCAB) -> list[str]:
    if n <= 0:
        return []
    start = zlib.crc32(seed_text.encode("utf-8", "replace")) % len(vocab)
    size = len(vocab)
    return [vocab[(start + i) % size] for i in range(n)]


def content_text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return " ".join(parts)
    return str(content)


def apply_stop(words: list[str], stop) -> tuple[list[str], bool]:
    """Cut generation at the first stop string; returns (words, stopped)."""
    if not stop:
        return words, False
    stops = [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str) and s]
    if not stops:
        return words, False
    text = ""
    for i, w in enumerate(words):
        text = w if i == 0 else text + " " + w
        for s in stops:
            if s in text:
                return words[:i], True
    return words, False


@lru_cache(maxsize=8192)
def embedding_for(text: str, dim: int) -> tuple[float, ...]:
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8", "replace")).digest()[:8], "little")
    rng = random.Random(seed)
    vec = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(math.fsum(x * x for x in vec)) or 1.0
    return tuple(x / norm for x in vec)


@lru_cache(maxsize=8192)
def embedding_json(text: str, dim: int, fmt: str) -> str:
    vec = embedding_for(text, dim)
    if fmt == "base64":
        return json.dumps(base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode("ascii"))
    return json.dumps(vec, separators=(",", ":"))


def spaced(words: list[str]) -> list[str]:
    """Words as streamed text pieces: every piece after the first carries its leading space."""
    return [w if j == 0 else " " + w for j, w in enumerate(words)]


def usage_of(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }


def body_usage(prompt_tokens: int, completion_tokens: int) -> dict:
    """usage_of as a JSON body (not a streamed chunk) spells it."""
    usage = usage_of(prompt_tokens, completion_tokens)
    usage["prompt_tokens_details"] = None
    return usage


class GenerationAPI:
    """How one OpenAI generation API spells its answers (one instance per server). A choice is a
    tuple of word lists, then its finish reason; Double.answer_generation sends them."""

    id_prefix = ""
    object_name = ""
    chunk_object_name = ""
    trailing_nulls: ClassVar[dict[str, None]] = {}  # the body's last fields, all null

    def stream_choices(
        self, choices: list[tuple], prompt_tokens: int, continuous: bool
    ) -> Iterator[tuple[dict, dict | None]]:
        """The `choices` entry of each streamed chunk, with that chunk's usage (or None)."""
        raise NotImplementedError

    def body_choices(self, choices: list[tuple]) -> list[dict]:
        raise NotImplementedError


class ChatAPI(GenerationAPI):
    """/v1/chat/completions: choices are (reasoning words, content words, finish reason)."""

    id_prefix = "chatcmpl-"
    object_name = "chat.completion"
    chunk_object_name = "chat.completion.chunk"
    trailing_nulls: ClassVar[dict[str, None]] = dict.fromkeys(
        ("prompt_logprobs", "prompt_token_ids", "kv_transfer_params")
    )

    def __init__(self, reasoning_key: str) -> None:
        self.reasoning_key = reasoning_key

    def stream_choices(
        self, choices: list[tuple], prompt_tokens: int, continuous: bool
    ) -> Iterator[tuple[dict, dict | None]]:
        rkey = self.reasoning_key
        for i, (rw, cw, fr) in enumerate(choices):
            # the role delta, then one delta a word; without words, an empty delta ends the choice
            deltas = [{"role": "assistant", "content": ""}]
            deltas += [{rkey: text} for text in spaced(rw)]
            deltas += [{"content": text} for text in spaced(cw)]
            if len(deltas) == 1:
                deltas.append({})
            last = len(deltas) - 1
            words = len(rw) + len(cw)
            for k, delta in enumerate(deltas):
                choice = {
                    "index": i,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": fr if k == last else None,
                }
                yield choice, usage_of(prompt_tokens, min(k, words)) if continuous else None

    def body_choices(self, choices: list[tuple]) -> list[dict]:
        rkey = self.reasoning_key
        return [
            {
                "index": i,
                "message": {
                    "role": "assistant",
                    "content": " ".join(cw) if (cw or not rw) else None,
                    "refusal": None,
                    "annotations": None,
                    "audio": None,
                    "function_call": None,
                    "tool_calls": [],
                    rkey: " ".join(rw) if rw else None,
                },
                "logprobs": None,
                "finish_reason": fr,
                "stop_reason": None,
                "token_ids": None,
            }
            for i, (rw, cw, fr) in enumerate(choices)
        ]


class TextAPI(GenerationAPI):
    """/v1/completions: choices are (words, finish reason); no usage in the streamed chunks."""

    id_prefix = "cmpl-"
    object_name = chunk_object_name = "text_completion"
    trailing_nulls: ClassVar[dict[str, None]] = {"kv_transfer_params": None}

    def stream_choices(
        self, choices: list[tuple], prompt_tokens: int, continuous: bool
    ) -> Iterator[tuple[dict, dict | None]]:
        for i, (words, fr) in enumerate(choices):
            pieces = spaced(words) or [""]
            last = len(pieces) - 1
            for k, text in enumerate(pieces):
                choice = {
                    "index": i,
                    "text": text,
                    "logprobs": None,
                    "finish_reason": fr if k == last else None,
                    "stop_reason": None,
                }
                yield choice, None

    def body_choices(self, choices: list[tuple]) -> list[dict]:
        return [
            {
                "index": i,
                "text": " ".join(words),
                "logprobs": None,
                "finish_reason": fr,
                "stop_reason": None,
                "prompt_logprobs": None,
            }
            for i, (words, fr) in enumerate(choices)
        ]


# ---------------------------------------------------------------------------------------------
# the server
# ---------------------------------------------------------------------------------------------


class Double:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.pid = os.getpid()
        self.core_pid = self.pid + 281 if self.pid < 100 else self.pid + 1
        self.api = f"(APIServer pid={self.pid})"
        self.core = f"(EngineCore_DP0 pid={self.core_pid})"
        self.phase = "starting"  # starting -> loading -> ready -> stopping
        self.exit_code = 0
        self.stop_event: asyncio.Event | None = None
        self.sock: socket.socket | None = None
        self.server: asyncio.base_events.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.http_503 = env_flag("KIT_DOUBLE_HTTP_503")
        self.token_delay = env_float("KIT_DOUBLE_TOKEN_DELAY_MS", 0.0) / 1000.0
        self.chat_api = ChatAPI(cfg.reasoning_key)
        self.text_api = TextAPI()
        self.created = int(time.time())
        # metrics
        self.m_running = 0
        self.m_prompt = 0
        self.m_gen = 0
        self.m_success: dict[str, int] = {}
        self.m_requests = 0
        self.routes = {
            "/health": {"GET": self.h_health},
            "/ping": {"GET": self.h_health, "POST": self.h_health},
            "/version": {"GET": self.h_version},
            "/metrics": {"GET": self.h_metrics},
            "/v1/models": {"GET": self.h_models},
            "/v1/chat/completions": {"POST": self.h_chat},
            "/v1/completions": {"POST": self.h_completions},
            "/v1/embeddings": {"POST": self.h_embeddings},
            "/rerank": {"POST": self.h_rerank},
            "/v1/rerank": {"POST": self.h_rerank},
            "/v2/rerank": {"POST": self.h_rerank},
            "/score": {"POST": self.h_score},
            "/v1/score": {"POST": self.h_score},
        }

    # ------------------------------------------------------------------ logging
    def log_api(self, level: str, src: str, msg: str) -> None:
        out(f"{self.api} {level} {ts()} [{src}] {msg}\n")

    def log_core(self, level: str, src: str, msg: str) -> None:
        out(f"{self.core} {level} {ts()} [{src}] {msg}\n")

    def ctx(self, **extra) -> dict[str, object]:
        base = {
            "api": self.api,
            "api_blank": self.api + " ",  # a blank traceback line still carries the prefix
            "core": self.core,
            "ts": ts(),
            "site": SITE,
            "pid": self.pid,
        }
        base.update(extra)
        return base

    def failure_text(self, cause: str) -> str:
        c = self.cfg
        extra: dict[str, object] = {"model": c.model, "repo": c.hub_repo()}
        if cause == "world_size":
            world = c.world
            gpus = c.gpus if c.gpus < world else max(world - 1, 0)
            extra.update(world=world, gpus=gpus)
        elif cause == "heads":
            heads = int(c.num_heads or 14)
            tp = c.tp
            if tp <= 1 or heads % tp == 0:
                tp = next(k for k in range(2, heads + 2) if heads % k)
            extra.update(heads=heads, tp=tp)
        elif cause == "free_memory":
            total = c.gpu_total_gib
            requested = round(total * c.util, 2)
            free = round(requested * 0.6, 2)
            extra.update(free=f"{free}", total=f"{total}", util=c.util, requested=f"{requested}")
        elif cause in ("oom",):
            extra.update(oom_numbers(c.gpu_total_gib, c.model))
        elif cause == "trust_remote_code":
            inspect_at = os.path.abspath(c.model) if c.model_dir else f"https://hf.co/{c.model}"
            extra.update(inspect_at=inspect_at)
        elif cause == "gated_401":
            h = hashlib.sha1(c.hub_repo().encode()).hexdigest()
            req = f"Root=1-{h[:8]}-{h[8:32]};{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
            extra.update(req_id=req)
        elif cause == "unrecognized_args":
            extra.update(bad_args="--task embed")
        return render(FAILURE_TEMPLATES[cause], self.ctx(**extra))

    # ------------------------------------------------------------------ startup
    def print_preamble(self) -> None:
        c = self.cfg
        out(f"INFO {ts()} [__init__.py:216] Automatically detected platform cuda.\n")
        self.log_api("INFO", "api_server.py:1839", f"vLLM API server version {c.version}")
        self.log_api("INFO", "utils.py:233", f"non-default args: {c.nd_args!r}")

    def print_model_resolved(self) -> None:
        c = self.cfg
        self.log_api("INFO", "model.py:547", f"Resolved architecture: {c.architecture}")
        self.log_api("INFO", "model.py:1510", f"Using max model len {c.max_model_len}")

    def print_engine_init(self) -> None:
        c = self.cfg
        mnbt = c.max_num_batched_tokens or (8192 if c.mode == "generate" else c.max_model_len)
        self.log_api(
            "INFO",
            "scheduler.py:205",
            f"Chunked prefill is enabled with max_num_batched_tokens={mnbt}.",
        )
        self.log_core("INFO", "core.py:644", "Waiting for init message from front-end.")
        self.log_core(
            "INFO",
            "core.py:77",
            f"Initializing a V1 LLM engine (v{c.version}) with config: model='{c.model}', "
            f"speculative_config=None, tokenizer='{c.model}', skip_tokenizer_init=False, "
            f"tokenizer_mode=auto, revision=None, trust_remote_code={c.trust_remote_code}, "
            f"dtype=torch.bfloat16, max_seq_len={c.max_model_len}, download_dir=None, "
            f"load_format=auto, tensor_parallel_size={c.tp}, pipeline_parallel_size={c.pp}, "
            f"data_parallel_size={c.dp}, disable_custom_all_reduce=False, "
            f"quantization={c.quantization}, enforce_eager={c.enforce_eager}, "
            f"kv_cache_dtype={c.kv_cache_dtype}, device_config=cuda, "
            f"served_model_name={c.served_names[0]}, enable_prefix_caching=True, "
            f"chunked_prefill_enabled=True, pooler_config={'None' if c.mode == 'generate' else 'PoolerConfig()'}",
        )
        self.log_core(
            "INFO",
            "parallel_state.py:1208",
            f"rank 0 in world size {c.world} is assigned as DP rank 0, PP rank 0, TP rank 0, EP rank 0",
        )

    async def sleep_or_stop(self, seconds: float) -> bool:
        """Sleep; True when the process was asked to stop meanwhile."""
        assert self.stop_event is not None
        if seconds <= 0:
            return self.stop_event.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), timeout=seconds)
        return self.stop_event.is_set()

    def bind_socket(self) -> bool:
        """vLLM binds its port before loading the model but only listens once ready."""
        c = self.cfg
        host = c.host or "0.0.0.0"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, c.port))
        except OSError as exc:
            sock.close()
            err(
                f"{self.api} Traceback (most recent call last):\n"
                f'{self.api}   File "{SITE}/vllm/entrypoints/openai/api_server.py", line 1865, in setup_server\n'
                f"{self.api}     sock = create_server_socket(sock_addr)\n"
                f'{self.api}   File "{SITE}/vllm/entrypoints/openai/api_server.py", line 1825, in create_server_socket\n'
                f"{self.api}     sock.bind(addr)\n"
                f"{self.api} OSError: [Errno {exc.errno}] {os.strerror(exc.errno or 98)}\n"
            )
            return False
        sock.setblocking(False)
        self.sock = sock
        return True

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.on_signal)
        crash_after = os.environ.get("KIT_DOUBLE_CRASH_AFTER", "").strip()
        crash_task = None
        if crash_after:
            crash_task = asyncio.create_task(
                self.crash_timer(env_float("KIT_DOUBLE_CRASH_AFTER", 0.0))
            )
        try:
            return await self._run()
        finally:
            if crash_task:
                crash_task.cancel()
            await self.close_http()

    async def _run(self) -> int:
        c = self.cfg
        forced = os.environ.get("KIT_DOUBLE_FAIL", "").strip().lower()
        if forced and forced not in FAIL_CAUSES:
            err(
                f"kit-engine-double: unknown KIT_DOUBLE_FAIL={forced!r}; known: {', '.join(FAIL_CAUSES)}\n"
            )
            return 2
        if forced == "unrecognized_args":
            err(self.failure_text("unrecognized_args"))
            return env_int("KIT_DOUBLE_EXIT_CODE", 2)

        self.phase = "loading"
        self.print_preamble()
        if not self.bind_socket():
            return 1

        async def fail(cause: str) -> int:
            # stdout and stderr reach `docker logs` through separate pipes: give the INFO lines
            # a head start so the traceback reads last, as it does with vLLM
            await asyncio.sleep(0.05)
            err(self.failure_text(cause))
            return env_int("KIT_DOUBLE_EXIT_CODE", 1)

        # A forced cause replaces the real checks; otherwise check like vLLM, in vLLM's order:
        # speculators probe + ModelConfig, then ParallelConfig, then VllmConfig.
        natural = not forced
        if forced in ("model_missing", "gated_401", "trust_remote_code"):
            return await fail(forced)
        if natural and c.model_problem == "missing":
            return await fail("model_missing")
        if natural and c.auto_map and not c.trust_remote_code:
            return await fail("trust_remote_code")
        self.print_model_resolved()
        if forced == "world_size" or (natural and c.world > 1 and c.world > c.gpus):
            return await fail("world_size")
        if forced == "heads" or (natural and c.num_heads and int(c.num_heads) % c.tp != 0):
            return await fail("heads")
        self.print_engine_init()

        load = max(env_float("KIT_DOUBLE_LOAD_SECONDS", 2.0), 0.0)
        if forced == "free_memory":
            if await self.sleep_or_stop(load * 0.2):
                return self.exit_code
            return await fail("free_memory")
        if await self.sleep_or_stop(load * 0.15):
            return self.exit_code
        self.log_core("INFO", "gpu_model_runner.py:2602", f"Starting to load model {c.model}...")
        self.log_core("INFO", "gpu_model_runner.py:2634", "Loading model from scratch...")
        self.log_core("INFO", "cuda.py:366", "Using Flash Attention backend on V1 engine.")
        shards = 4
        out(
            f"{self.core} Loading safetensors checkpoint shards:   0% Completed | 0/{shards} [00:00<?, ?it/s]\n"
        )
        if env_flag("KIT_DOUBLE_NEVER_READY"):
            return await self.never_ready()
        if await self.sleep_or_stop(load * 0.35):
            return self.exit_code
        out(
            f"{self.core} Loading safetensors checkpoint shards:  50% Completed | 2/{shards} [00:01<00:01,  1.62it/s]\n"
        )
        if await self.sleep_or_stop(load * 0.2):
            return self.exit_code
        if forced == "oom":
            return await fail("oom")
        out(
            f"{self.core} Loading safetensors checkpoint shards: 100% Completed | {shards}/{shards} [00:02<00:00,  1.58it/s]\n"
        )
        weights_gib = 15.27 / max(c.tp * c.pp, 1)
        self.log_core(
            "INFO", "default_loader.py:267", f"Loading weights took {load * 0.5 + 0.01:.2f} seconds"
        )
        self.log_core(
            "INFO",
            "gpu_model_runner.py:2653",
            f"Model loading took {weights_gib:.4f} GiB and {load * 0.55 + 0.02:.6f} seconds",
        )
        if await self.sleep_or_stop(load * 0.3):
            return self.exit_code
        kv_gib = max(c.gpu_total_gib * c.util - weights_gib - 2.1, 0.5)
        kv_tokens = int(kv_gib * 1024 * 1024 / 144)
        self.log_core("INFO", "gpu_worker.py:298", f"Available KV cache memory: {kv_gib:.2f} GiB")
        self.log_core("INFO", "kv_cache_utils.py:1087", f"GPU KV cache size: {kv_tokens:,} tokens")
        self.log_core(
            "INFO",
            "kv_cache_utils.py:1091",
            f"Maximum concurrency for {c.max_model_len:,} tokens per request: {kv_tokens / c.max_model_len:.2f}x",
        )
        self.log_core(
            "INFO",
            "core.py:210",
            f"init engine (profile, create kv cache, warmup model) took {load:.2f} seconds",
        )
        if self.stop_event.is_set():
            return self.exit_code
        return await self.serve()

    async def never_ready(self) -> int:
        interval = max(env_float("KIT_DOUBLE_LOG_INTERVAL", 5.0), 0.05)
        while not await self.sleep_or_stop(interval):
            self.log_api(
                "INFO",
                "utils.py:857",
                "Waiting for 1 local, 0 remote core engine proc(s) to start.",
            )
        return self.exit_code

    async def serve(self) -> int:
        c = self.cfg
        assert self.sock is not None
        self.sock.listen(4096)
        self.server = await asyncio.start_server(self.handle_conn, sock=self.sock, limit=1 << 20)
        self.phase = "ready"
        self.log_api(
            "INFO",
            "loggers.py:147",
            "Engine 000: vllm cache_config_info with initialization after num_gpu_blocks is: 23726",
        )
        self.log_api("INFO", "api_server.py:1634", f"Supported_tasks: {c.supported_tasks}")
        self.log_api(
            "INFO",
            "api_server.py:1912",
            f"Starting vLLM API server 0 on http://{c.host or '0.0.0.0'}:{c.port}",
        )
        self.log_api("INFO", "launcher.py:34", "Available routes are:")
        for path, methods in self.routes.items():
            self.log_api("INFO", "launcher.py:42", f"Route: {path}, Methods: {', '.join(methods)}")
        out(f"{self.api} INFO:     Started server process [{self.pid}]\n")
        out(f"{self.api} INFO:     Waiting for application startup.\n")
        out(f"{self.api} INFO:     Application startup complete.\n")
        assert self.stop_event is not None
        await self.stop_event.wait()
        return self.exit_code

    def on_signal(self) -> None:
        if self.stop_event is None or self.stop_event.is_set():
            return
        self.phase, was = "stopping", self.phase
        self.stop_event.set()  # first: a log write to a closed pipe must not cancel the stop
        if was == "ready":
            with contextlib.suppress(OSError, ValueError):
                out(render(_UVICORN_SHUTDOWN, self.ctx()))

    async def crash_timer(self, after: float) -> None:
        delay = PROCESS_START + after - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        assert self.stop_event is not None
        if self.stop_event.is_set():
            return
        c = self.cfg
        numbers = oom_numbers(c.gpu_total_gib, c.model + "runtime")
        await asyncio.sleep(0.05)  # let pending INFO lines reach the log first
        if self.phase == "ready":
            await self.close_http()
            err(render(RUNTIME_CRASH_TEMPLATE, self.ctx(**numbers)))
        else:
            err(render(FAILURE_TEMPLATES["oom"], self.ctx(**numbers)))
        self.exit_code = env_int("KIT_DOUBLE_EXIT_CODE", 0)
        self.phase = "stopping"
        self.stop_event.set()

    async def close_http(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        elif self.sock is not None:
            self.sock.close()
        self.sock = None
        for w in list(self.writers):
            with contextlib.suppress(Exception):
                w.close()
        self.writers.clear()

    # ------------------------------------------------------------------ HTTP connection
    async def handle_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # like uvicorn: without it, Nagle holds each streamed token until the client's
            # delayed ACK (up to 40 ms), and tokens arrive in bursts on reused connections
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = writer.get_extra_info("peername")
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                except asyncio.LimitOverrunError:
                    await self.write_response(
                        writer,
                        Response(431, b'{"detail":"Request Header Fields Too Large"}'),
                        False,
                    )
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, proto = lines[0].split(" ", 2)
                except ValueError:
                    await self.write_response(
                        writer, Response(400, b'{"detail":"Invalid HTTP request"}'), False
                    )
                    return
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        k, _, val = line.partition(":")
                        headers[k.strip().lower()] = val.strip()
                conn_hdr = headers.get("connection", "").lower()
                keep_alive = (
                    "close" not in conn_hdr if proto == "HTTP/1.1" else "keep-alive" in conn_hdr
                )
                if headers.get("expect", "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    body = await self.read_chunked(reader)
                else:
                    length = int(headers.get("content-length", "0") or 0)
                    body = await reader.readexactly(length) if length > 0 else b""
                req = Request(method.upper(), target, headers, body, peer)
                try:
                    resp = await self.dispatch(req, writer)
                except StreamedResponse:
                    if self.cfg.log_requests:
                        self.access_log(req, 200)
                    if not keep_alive:
                        return
                    continue
                except ClientGone:
                    return
                await self.write_response(writer, resp, keep_alive)
                if self.cfg.log_requests:
                    self.access_log(req, resp.status)
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, OSError):
            return
        except asyncio.CancelledError:
            return
        finally:
            self.writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def read_chunked(reader: asyncio.StreamReader) -> bytes:
        parts = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # trailers until empty line
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    @staticmethod
    async def write_response(
        writer: asyncio.StreamWriter, resp: Response, keep_alive: bool
    ) -> None:
        head = (
            b"HTTP/1.1 %d %s\r\ndate: %s\r\nserver: uvicorn\r\ncontent-length: %d\r\ncontent-type: %s\r\n%s\r\n"
            % (
                resp.status,
                REASONS.get(resp.status, "OK").encode(),
                http_date(),
                len(resp.body),
                resp.content_type,
                b"" if keep_alive else b"connection: close\r\n",
            )
        )
        writer.write(head + resp.body)
        await writer.drain()

    def access_log(self, req: Request, status: int) -> None:
        host, port = (req.peer[0], req.peer[1]) if isinstance(req.peer, tuple) else ("-", 0)
        out(
            f'{self.api} INFO:     {host}:{port} - "{req.method} {req.target} HTTP/1.1" {status} {REASONS.get(status, "")}\n'
        )

    # ------------------------------------------------------------------ routing
    async def dispatch(self, req: Request, writer: asyncio.StreamWriter) -> Response:
        self.m_requests += 1
        methods = self.routes.get(req.path)
        if methods is None:
            return Response(404, b'{"detail":"Not Found"}')
        handler = methods.get(req.method)
        if handler is None:
            return Response(405, b'{"detail":"Method Not Allowed"}')
        if (
            self.cfg.api_keys
            and req.path.startswith("/v1")
            and req.method != "OPTIONS"
            and req.headers.get("authorization") not in self.cfg.api_keys
        ):
            return Response(401, b'{"error":"Unauthorized"}')
        if self.http_503 and req.path not in ("/version", "/metrics"):
            if req.path in ("/health", "/ping"):
                return Response(503)
            return self.error(
                "EngineCore encountered an issue. See stack trace (above) for the root cause.",
                "EngineDeadError",
                503,
            )
        return await handler(req, writer)

    # ------------------------------------------------------------------ errors
    def error(
        self,
        message: str,
        err_type: str = "BadRequestError",
        code: int = 400,
        status: int | None = None,
    ) -> Response:
        if self.cfg.nested_errors:
            obj: dict = {
                "error": {"message": message, "type": err_type, "param": None, "code": code}
            }
        else:
            obj = {
                "object": "error",
                "message": message,
                "type": err_type,
                "param": None,
                "code": code,
            }
        return json_response(obj, status if status is not None else code)

    def unsupported(self, message: str) -> Response:
        # vLLM returns the ErrorResponse model from the route without a status code, so FastAPI
        # answers HTTP 200 with an error body (vllm-project/vllm#21704).
        return self.error(message, "BadRequestError", 400, status=200)

    def invalid(self, err_type: str, loc: tuple, msg: str, value: object, **ctx) -> Response:
        """A request validation error, worded as the repr of pydantic's error list (as vLLM)."""
        detail: dict = {"type": err_type, "loc": ("body", *loc), "msg": msg, "input": value}
        if ctx:
            detail["ctx"] = ctx
        return self.error(repr([detail]))

    def missing_field(self, field: str, body: dict) -> Response:
        return self.invalid("missing", (field,), "Field required", body)

    def request_body(
        self, req: Request, supported: bool, api: str
    ) -> tuple[dict | None, Response | None]:
        """The JSON body of a request to `api`, or the answer when the model does not serve
        `api` or the body is unusable."""
        if not supported:
            return None, self.unsupported(f"The model does not support {api}")
        return self.parse_body(req)

    def parse_body(self, req: Request) -> tuple[dict | None, Response | None]:
        try:
            body = json.loads(req.body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            loc = (getattr(exc, "pos", 0),)
            return None, self.invalid(
                "json_invalid", loc, "JSON decode error", {}, error=type(exc).__name__
            )
        if not isinstance(body, dict):
            return None, self.invalid(
                "model_attributes_type",
                (),
                "Input should be a valid dictionary or object to extract fields from",
                body,
            )
        model = body.get("model")
        if model is not None and model not in self.cfg.served_names:
            return None, self.error(f"The model `{model}` does not exist.", "NotFoundError", 404)
        return body, None

    # ------------------------------------------------------------------ simple routes
    async def h_health(self, req, writer) -> Response:
        return Response(200)

    async def h_version(self, req, writer) -> Response:
        return json_response({"version": self.cfg.version})

    async def h_models(self, req, writer) -> Response:
        c = self.cfg
        data = []
        for name in c.served_names:
            data.append(
                {
                    "id": name,
                    "object": "model",
                    "created": int(time.time()),
                    "owned_by": "vllm",
                    "root": c.model,
                    "parent": None,
                    "max_model_len": c.max_model_len,
                    "permission": [
                        {
                            "id": f"modelperm-{uuid.uuid4().hex}",
                            "object": "model_permission",
                            "created": int(time.time()),
                            "allow_create_engine": False,
                            "allow_sampling": True,
                            "allow_logprobs": True,
                            "allow_search_indices": False,
                            "allow_view": True,
                            "allow_fine_tuning": False,
                            "organization": "*",
                            "group": None,
                            "is_blocking": False,
                        }
                    ],
                }
            )
        return json_response({"object": "list", "data": data})

    async def h_metrics(self, req, writer) -> Response:
        name = self.cfg.served_names[0].replace("\\", "\\\\").replace('"', '\\"')
        lbl = f'engine="0",model_name="{name}"'
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{lbl}}} {float(self.m_running)}",
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{lbl}}} 0.0",
            "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{{{lbl}}} {min(self.m_running * 0.01, 1.0)}",
            "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
            "# TYPE vllm:prompt_tokens_total counter",
            f"vllm:prompt_tokens_total{{{lbl}}} {float(self.m_prompt)}",
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{lbl}}} {float(self.m_gen)}",
            "# HELP vllm:request_success_total Count of successfully processed requests.",
            "# TYPE vllm:request_success_total counter",
        ]
        for reason in sorted(set(self.m_success) | {"stop", "length", "abort"}):
            lines.append(
                f'vllm:request_success_total{{{lbl},finished_reason="{reason}"}} {float(self.m_success.get(reason, 0))}'
            )
        lines += [
            "# HELP kit_double_http_requests_total HTTP requests seen by the engine double.",
            "# TYPE kit_double_http_requests_total counter",
            f"kit_double_http_requests_total {float(self.m_requests)}",
        ]
        return Response(
            200, ("\n".join(lines) + "\n").encode(), b"text/plain; version=0.0.4; charset=utf-8"
        )

    # ------------------------------------------------------------------ generation
    def max_tokens_of(self, body: dict, prompt_tokens: int) -> tuple[int | None, Response | None]:
        c = self.cfg
        raw = body.get("max_completion_tokens")
        if raw is None:
            raw = body.get("max_tokens")
        if raw is None:
            raw = 16
        if isinstance(raw, bool) or not isinstance(raw, int):
            return None, self.invalid(
                "int_type", ("max_tokens",), "Input should be a valid integer", raw
            )
        if raw < 1:
            return None, self.error(f"max_tokens must be at least 1, got {raw}.")
        if prompt_tokens >= c.max_model_len:
            return None, self.error(
                f"This model's maximum context length is {c.max_model_len} tokens. However, your request has "
                f"{prompt_tokens} input tokens. Please reduce the length of the input messages."
            )
        if raw + prompt_tokens > c.max_model_len:
            return None, self.error(
                f"'max_tokens' or 'max_completion_tokens' is too large: {raw}. This model's maximum context "
                f"length is {c.max_model_len} tokens and your request has {prompt_tokens} input tokens "
                f"({raw} > {c.max_model_len} - {prompt_tokens})."
            )
        return raw, None

    def finish(
        self, prompt_tokens: int, completion_tokens: int, reasons: Iterable[str], each: int = 1
    ) -> None:
        """Count answered requests in the metrics: the tokens once, `each` success per reason."""
        self.m_prompt += prompt_tokens
        self.m_gen += completion_tokens
        for reason in reasons:
            self.m_success[reason] = self.m_success.get(reason, 0) + each

    async def start_stream(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ndate: %s\r\nserver: uvicorn\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\n\r\n" % http_date()
        )

    @staticmethod
    def sse(obj: object) -> bytes:
        data = b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
        return b"%x\r\n%s\r\n" % (len(data), data)

    SSE_DONE = b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"

    async def emit(self, writer: asyncio.StreamWriter, chunks: list[bytes], delay: float) -> None:
        """Write SSE chunks; with a token delay, one by one."""
        try:
            if delay <= 0:
                writer.write(b"".join(chunks))
                await writer.drain()
                return
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(delay)
        except (ConnectionError, OSError) as exc:
            raise ClientGone() from exc

    async def answer_generation(
        self,
        writer,
        body: dict,
        api: GenerationAPI,
        choices: list[tuple],
        prompt_tokens: int,
        completion_tokens: int,
        max_tokens: int,
    ) -> Response:
        """Send `choices` as SSE chunks (`stream`) or as one JSON body; count them once sent."""
        rid = api.id_prefix + uuid.uuid4().hex
        created = int(time.time())
        model = self.cfg.served_names[0]
        reasons = [choice[-1] for choice in choices]
        self.m_running += 1
        try:
            if body.get("stream"):
                head = {
                    "id": rid,
                    "object": api.chunk_object_name,
                    "created": created,
                    "model": model,
                }
                opts = body.get("stream_options") or {}
                include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
                continuous = include_usage and bool(opts.get("continuous_usage_stats"))
                await self.start_stream(writer)
                chunks: list[bytes] = []
                for choice, chunk_usage in api.stream_choices(choices, prompt_tokens, continuous):
                    chunk = dict(head, choices=[choice])
                    if chunk_usage is not None:
                        chunk["usage"] = chunk_usage
                    chunks.append(self.sse(chunk))
                if include_usage:
                    usage = usage_of(prompt_tokens, completion_tokens)
                    chunks.append(self.sse(dict(head, choices=[], usage=usage)))
                chunks.append(self.SSE_DONE)
                await self.emit(writer, chunks, self.token_delay)
                self.finish(prompt_tokens, completion_tokens, reasons)
                raise StreamedResponse()
            if self.token_delay > 0:
                await asyncio.sleep(self.token_delay * max_tokens)
            answer = {
                "id": rid,
                "object": api.object_name,
                "created": created,
                "model": model,
                "choices": api.body_choices(choices),
                "service_tier": None,
                "system_fingerprint": None,
                "usage": body_usage(prompt_tokens, completion_tokens),
                **api.trailing_nulls,
            }
            self.finish(prompt_tokens, completion_tokens, reasons)
            return json_response(answer)
        finally:
            self.m_running -= 1

    async def h_chat(self, req: Request, writer) -> Response:
        c = self.cfg
        body, problem = self.request_body(req, c.mode == "generate", "Chat Completions API")
        if problem:
            return problem
        assert body is not None
        messages = body.get("messages")
        if not isinstance(messages, list):
            return self.missing_field("messages", body)
        prompt_text = " ".join(
            content_text(m.get("content")) for m in messages if isinstance(m, dict)
        )
        prompt_tokens = len(words_of(prompt_text))
        max_tokens, problem = self.max_tokens_of(body, prompt_tokens)
        if problem:
            return problem
        assert max_tokens is not None
        n = body.get("n") or 1
        n = n if isinstance(n, int) and 1 <= n <= 64 else 1
        thinking = True
        kwargs = body.get("chat_template_kwargs")
        if isinstance(kwargs, dict) and kwargs.get("enable_thinking") is False:
            thinking = False
        use_reasoning = bool(c.reasoning_parser) and thinking

        choices = []
        for i in range(n):
            r_n = max_tokens // 2 if use_reasoning else 0
            reasoning_words = gen_words(prompt_text + "#r", r_n, REASONING_VOCAB)
            content_words, stopped = apply_stop(
                gen_words(prompt_text + f"#{i}", max_tokens - r_n), body.get("stop")
            )
            choices.append((reasoning_words, content_words, "stop" if stopped else "length"))
        completion_tokens = sum(len(r) + len(w) for r, w, _ in choices)
        return await self.answer_generation(
            writer, body, self.chat_api, choices, prompt_tokens, completion_tokens, max_tokens
        )

    async def h_completions(self, req: Request, writer) -> Response:
        c = self.cfg
        body, problem = self.request_body(req, c.mode == "generate", "Completions API")
        if problem:
            return problem
        assert body is not None
        if "prompt" not in body:
            return self.missing_field("prompt", body)
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            prompts = list(prompt)
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            prompts = [" ".join(str(t) for t in prompt)]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, list) for p in prompt):
            prompts = [" ".join(str(t) for t in p) for p in prompt]
        else:
            return self.error("Either prompt or prompt_embeds must be provided and non-empty.")
        prompt_tokens_each = [len(words_of(p)) for p in prompts]
        max_tokens, problem = self.max_tokens_of(body, max(prompt_tokens_each))
        if problem:
            return problem
        assert max_tokens is not None
        results = []
        for p in prompts:
            words, stopped = apply_stop(gen_words(p, max_tokens), body.get("stop"))
            results.append((words, "stop" if stopped else "length"))
        prompt_tokens = sum(prompt_tokens_each)
        completion_tokens = sum(len(w) for w, _ in results)
        return await self.answer_generation(
            writer, body, self.text_api, results, prompt_tokens, completion_tokens, max_tokens
        )

    # ------------------------------------------------------------------ pooling
    async def h_embeddings(self, req: Request, writer) -> Response:
        c = self.cfg
        body, problem = self.request_body(req, c.mode == "embed", "Embeddings API")
        if problem:
            return problem
        assert body is not None
        if "input" not in body:
            return self.missing_field("input", body)
        raw = body.get("input")
        if isinstance(raw, str):
            texts, counts = [raw], [len(words_of(raw))]
        elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
            texts, counts = list(raw), [len(words_of(x)) for x in raw]
        elif (
            isinstance(raw, list)
            and raw
            and all(isinstance(x, int) and not isinstance(x, bool) for x in raw)
        ):
            texts, counts = [json.dumps(raw)], [len(raw)]
        elif isinstance(raw, list) and raw and all(isinstance(x, list) for x in raw):
            texts, counts = [json.dumps(x) for x in raw], [len(x) for x in raw]
        else:
            return self.error(
                "Input must be a string, a list of strings or a list of token ids, and must not be empty."
            )
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            return self.invalid(
                "literal_error", ("encoding_format",), "Input should be 'float' or 'base64'", fmt
            )
        too_long = [n for n in counts if n > c.max_model_len]
        if too_long:
            return self.error(
                f"This model's maximum context length is {c.max_model_len} tokens. However, you requested "
                f"{too_long[0]} tokens in the input for embedding generation. Please reduce the length of the input."
            )
        dim = c.embed_dim
        parts = [
            f'{{"index":{i},"object":"embedding","embedding":{embedding_json(t, dim, fmt)}}}'
            for i, t in enumerate(texts)
        ]
        tokens = sum(counts)
        self.finish(tokens, 0, ("stop",), len(texts))
        usage = (
            f'{{"prompt_tokens":{tokens},"total_tokens":{tokens},'
            f'"completion_tokens":0,"prompt_tokens_details":null}}'
        )
        payload = (
            f'{{"id":"embd-{uuid.uuid4().hex}","object":"list","created":{int(time.time())},'
            f'"model":{json.dumps(c.served_names[0])},"data":[{",".join(parts)}],"usage":{usage}}}'
        )
        return Response(200, payload.encode())

    @staticmethod
    def doc_text(doc) -> str | None:
        if isinstance(doc, str):
            return doc
        if isinstance(doc, dict) and isinstance(doc.get("text"), str):
            return doc["text"]
        return None

    async def h_rerank(self, req: Request, writer) -> Response:
        c = self.cfg
        body, problem = self.request_body(req, c.mode != "generate", "Rerank (Score) API")
        if problem:
            return problem
        assert body is not None
        query = body.get("query")
        if not isinstance(query, str):
            return self.missing_field("query", body)
        docs_raw = body.get("documents")
        if not isinstance(docs_raw, list):
            return self.missing_field("documents", body)
        docs = [self.doc_text(d) for d in docs_raw]
        if any(d is None for d in docs):
            return self.error("documents must be a list of strings or of {'text': ...} objects.")
        top_n = body.get("top_n") or 0
        if not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 0:
            return self.error(f"top_n must be a non-negative integer, got {top_n!r}.")
        q_tokens = len(words_of(query))
        total = 0
        results = []
        for i, d in enumerate(docs):
            assert d is not None
            total += q_tokens + len(words_of(d))
            results.append(
                {"index": i, "document": {"text": d}, "relevance_score": relevance(query, d)}
            )
        results.sort(key=lambda r: (-r["relevance_score"], r["index"]))
        if top_n:
            results = results[:top_n]
        self.finish(total, 0, ("stop",), len(docs))
        return json_response(
            {
                "id": f"rerank-{uuid.uuid4().hex}",
                "model": c.served_names[0],
                "usage": {"total_tokens": total},
                "results": results,
            }
        )

    async def h_score(self, req: Request, writer) -> Response:
        c = self.cfg
        body, problem = self.request_body(req, c.mode != "generate", "Score API")
        if problem:
            return problem
        assert body is not None
        t1 = body.get("text_1", body.get("data_1", body.get("queries")))
        t2 = body.get("text_2", body.get("data_2", body.get("documents", body.get("items"))))
        if t1 is None:
            return self.missing_field("text_1", body)
        if t2 is None:
            return self.missing_field("text_2", body)
        l1 = [t1] if isinstance(t1, str) else t1
        l2 = [t2] if isinstance(t2, str) else t2
        if not (isinstance(l1, list) and isinstance(l2, list)) or not l1 or not l2:
            return self.error("text_1 and text_2 must be strings or non-empty lists of strings.")
        if not all(isinstance(x, str) for x in l1 + l2):
            return self.error("text_1 and text_2 must be strings or non-empty lists of strings.")
        if len(l1) == 1:
            l1 = l1 * len(l2)
        elif len(l1) != len(l2):
            return self.error(
                "text_1 and text_2 must have the same length (or text_1 a single text)."
            )
        data = []
        total = 0
        for i, (a, b) in enumerate(zip(l1, l2, strict=True)):
            total += len(words_of(a)) + len(words_of(b))
            data.append({"index": i, "object": "score", "score": relevance(a, b)})
        self.finish(total, 0, ("stop",), len(data))
        return json_response(
            {
                "id": f"score-{uuid.uuid4().hex}",
                "object": "list",
                "created": int(time.time()),
                "model": c.served_names[0],
                "data": data,
                "usage": body_usage(total, 0),
            }
        )


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------


def _exit_now(signum, frame) -> None:  # until the event loop installs its own handlers
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)
    argv = sys.argv[1:] if argv is None else argv
    version = os.environ.get("KIT_DOUBLE_VLLM_VERSION", "0.11.0").strip() or "0.11.0"
    parser = build_parser(version)
    ns, extras = parser.parse_known_args(argv)
    if extras:
        # argparse reports unknown options of a subcommand from the top-level parser
        err(render(FAILURE_TEMPLATES["unrecognized_args"], {"bad_args": " ".join(extras)}))
        return 2
    if not getattr(ns, "kit_serve", False):
        if ns.subparser is None:
            parser.print_help()
            return 0
        err(
            f"kit-engine-double: only `vllm serve` and `vllm --version` are simulated, not `vllm {ns.subparser}`\n"
        )
        return 2
    if ns.model_tag and ns.model:
        pass  # vLLM warns and uses the positional model
    cfg = Config(ns, version, non_default_args(parser, ns))
    double = Double(cfg)
    try:
        return asyncio.run(double.run())
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
