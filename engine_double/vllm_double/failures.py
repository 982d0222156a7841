"""vLLM's tracebacks for each failure cause, and the numbers the double fills in.

vLLM 0.11 layout, `vllm serve` in a container. Sources (key lines verbatim): vllm/config/parallel.py
(world size), vllm/config/model.py verify_with_parallel_config (heads),
vllm/v1/worker/gpu_worker.py init_device (free memory), torch.cuda OutOfMemoryError text,
huggingface_hub validate_repo_id + GatedRepoError and transformers cached_files (model path /
gated repo), transformers resolve_trust_remote_code (as seen wrapped in a pydantic
ValidationError in a vLLM 0.11.0 log), argparse (unrecognized). Tracebacks are excerpts: a few
middle frames are left out to keep each cause under 40 lines.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from typing import TYPE_CHECKING

from .logs import UVICORN_SHUTDOWN, Log, render

if TYPE_CHECKING:
    from .config import Config

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


# huggingface_hub's errors for a model path that is no repo id, and for a gated repo
_INVALID_REPO_ID = "${api} huggingface_hub.errors.HFValidationError: Repo id must be in the form 'repo_name' or 'namespace/repo_name': '${model}'. Use `repo_type` argument if needed.\n"
_GATED_401 = """\
401 Client Error. (Request ID: ${req_id})
${api_blank}
${api} Cannot access gated repo for url https://huggingface.co/${repo}/resolve/main/config.json.
${api} Access to model ${repo} is restricted. You must have access to it and be authenticated to access it. Please log in.
"""


def _config_probe_failure(cause: str, link: str, frames: str) -> str:
    """The speculators probe of create_engine_config cannot get the model's config.json: the
    hub's exception `cause`, Python's `link` line between chained exceptions, then the API
    server's traceback down to transformers' cached_file, ending with `frames`."""
    return (
        cause
        + "${api_blank}\n${api} "
        + link
        + "\n${api_blank}\n"
        + _API_HEAD
        + _SPECULATORS_PROBE
        + frames
    )


def _config_validation_failure(frames: str, config: str, message: str, input_value: str) -> str:
    """The API server cannot build vLLM's `config` (a pydantic dataclass): `frames` lead from
    create_engine_config to it, then pydantic's one-error ValidationError with `message`."""
    return (
        _API_HEAD
        + frames
        + _PYDANTIC_INIT
        + "${api} pydantic_core._pydantic_core.ValidationError: 1 validation error for "
        + config
        + "\n${api}   Value error, "
        + message
        + " [type=value_error, input_value="
        + input_value
        + """, input_type=ArgsKwargs]
${api}     For further information visit https://errors.pydantic.dev/2.11/v/value_error
"""
    )


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


FAILURE_TEMPLATES: dict[str, str] = {
    "world_size": _config_validation_failure(
        """\
${api}   File "${site}/vllm/engine/arg_utils.py", line 1329, in create_engine_config
${api}     parallel_config = ParallelConfig(
${api}                       ^^^^^^^^^^^^^^^
""",
        "ParallelConfig",
        """World size (${world}) is larger than the number of available GPUs (${gpus}) in this node. If this is intentional and you are using:
${api} - ray, set '--distributed-executor-backend ray'.
${api} - multiprocessing, set '--nnodes' appropriately.""",
        "ArgsKwargs((), {'pipeline...'_api_process_rank': 0})",
    ),
    "heads": _config_validation_failure(
        """\
${api}   File "${site}/vllm/engine/arg_utils.py", line 1440, in create_engine_config
${api}     config = VllmConfig(
${api}              ^^^^^^^^^^^
""",
        "VllmConfig",
        "Total number of attention heads (${heads}) must be divisible by tensor parallel size (${tp}).",
        "ArgsKwargs((), {'model_co...additional_config': {}})",
    ),
    "trust_remote_code": _config_validation_failure(
        """\
${api}   File "${site}/vllm/engine/arg_utils.py", line 1142, in create_engine_config
${api}     model_config = self.create_model_config()
${api}                    ^^^^^^^^^^^^^^^^^^^^^^^^^^
${api}   File "${site}/vllm/engine/arg_utils.py", line 994, in create_model_config
${api}     return ModelConfig(
${api}            ^^^^^^^^^^^^
""",
        "ModelConfig",
        """The repository ${model} contains custom code which must be executed to correctly load the model. You can inspect the repository content at ${inspect_at} .
${api}  You can inspect the repository content at https://hf.co/${model}.
${api} Please pass the argument `trust_remote_code=True` to allow custom code to be run.""",
        "ArgsKwargs((), {'model': ...rocessor_plugin': None})",
    ),
    "model_missing": _config_probe_failure(
        """\
${api} Traceback (most recent call last):
${api}   File "${site}/transformers/utils/hub.py", line 479, in cached_files
${api}     hf_hub_download(
${api}   File "${site}/huggingface_hub/utils/_validators.py", line 154, in validate_repo_id
${api}     raise HFValidationError(
"""
        + _INVALID_REPO_ID,
        "During handling of the above exception, another exception occurred:",
        """\
${api}   File "${site}/transformers/utils/hub.py", line 532, in cached_files
${api}     _get_cache_file_to_return(path_or_repo_id, filename, cache_dir, revision, repo_type)
${api}   File "${site}/transformers/utils/hub.py", line 143, in _get_cache_file_to_return
${api}     resolved_file = try_to_load_from_cache(
${api}                     ^^^^^^^^^^^^^^^^^^^^^^^
${api}   File "${site}/huggingface_hub/utils/_validators.py", line 154, in validate_repo_id
${api}     raise HFValidationError(
"""
        + _INVALID_REPO_ID,
    ),
    "gated_401": _config_probe_failure(
        "${api} huggingface_hub.errors.GatedRepoError: " + _GATED_401,
        "The above exception was the direct cause of the following exception:",
        """\
${api}   File "${site}/transformers/utils/hub.py", line 543, in cached_files
${api}     raise OSError(
${api} OSError: You are trying to access a gated repo.
${api} Make sure to have access to it at https://huggingface.co/${repo}.
${api} """
        + _GATED_401,
    ),
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
    + UVICORN_SHUTDOWN
)


# the API server cannot bind its port (another process holds it, or no permission)
BIND_FAILURE_TEMPLATE = """\
${api} Traceback (most recent call last):
${api}   File "${site}/vllm/entrypoints/openai/api_server.py", line 1865, in setup_server
${api}     sock = create_server_socket(sock_addr)
${api}   File "${site}/vllm/entrypoints/openai/api_server.py", line 1825, in create_server_socket
${api}     sock.bind(addr)
${api} OSError: [Errno ${errno}] ${strerror}
"""


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


def unrecognized_args_text(bad_args: str) -> str:
    """argparse's usage and error for unknown flags (printed before any log line)."""
    return render(FAILURE_TEMPLATES["unrecognized_args"], {"bad_args": bad_args})


def failure_text(cause: str, c: Config, log: Log) -> str:
    """What vLLM prints when it fails to start for `cause`, with numbers from the config."""
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
    return log.render(FAILURE_TEMPLATES[cause], **extra)


def crash_text(c: Config, log: Log, serving: bool) -> str:
    """The engine dies of CUDA OOM (KIT_DOUBLE_CRASH_AFTER): mid-service, the engine core's
    fatal error and the API server's shutdown; before that, the startup OOM traceback."""
    numbers = oom_numbers(c.gpu_total_gib, c.model + "runtime")
    return log.render(RUNTIME_CRASH_TEMPLATE if serving else FAILURE_TEMPLATES["oom"], **numbers)


def bind_failure_text(log: Log, exc: OSError) -> str:
    return log.render(BIND_FAILURE_TEMPLATE, errno=exc.errno, strerror=os.strerror(exc.errno or 98))
