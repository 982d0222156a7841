"""vLLM's log lines as the double prints them: the prefixes of vLLM's two processes (API server
and engine core), the INFO lines of each startup step, uvicorn's lines, and the rendering of
the multi-line templates (tracebacks live in failures.py)."""

from __future__ import annotations

import sys
import time
from string import Template
from typing import TYPE_CHECKING

from .http_server import REASONS, Request

if TYPE_CHECKING:
    from .config import Config

SITE = "/usr/local/lib/python3.12/dist-packages"  # where vLLM's image has it: traceback paths

# uvicorn's shutdown lines: on SIGTERM / SIGINT, and after a runtime crash
UVICORN_SHUTDOWN = """\
${api} INFO:     Shutting down
${api} INFO:     Waiting for application shutdown.
${api} INFO:     Application shutdown complete.
${api} INFO:     Finished server process [${pid}]
"""

SHARDS = 4
# the checkpoint progress bar at its three steps: started, half-way, done
SHARD_PROGRESS = (
    f"  0% Completed | 0/{SHARDS} [00:00<?, ?it/s]",
    f" 50% Completed | 2/{SHARDS} [00:01<00:01,  1.62it/s]",
    f"100% Completed | {SHARDS}/{SHARDS} [00:02<00:00,  1.58it/s]",
)


def ts() -> str:
    return time.strftime("%m-%d %H:%M:%S")


def out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def err(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def render(template: str, ctx: dict[str, object]) -> str:
    return Template(template).substitute({k: str(v) for k, v in ctx.items()})


def weights_gib(cfg: Config) -> float:
    """GiB of weights per GPU (a 15 GiB model split over the world)."""
    return 15.27 / max(cfg.tp * cfg.pp, 1)


class Log:
    """The log of one double process, written as vLLM's API server and engine core would."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        core_pid = pid + 281 if pid < 100 else pid + 1
        self.api = f"(APIServer pid={pid})"
        self.core = f"(EngineCore_DP0 pid={core_pid})"

    def api_line(self, level: str, src: str, msg: str) -> None:
        out(f"{self.api} {level} {ts()} [{src}] {msg}\n")

    def core_line(self, level: str, src: str, msg: str) -> None:
        out(f"{self.core} {level} {ts()} [{src}] {msg}\n")

    def ctx(self, **extra) -> dict[str, object]:
        """The values templates refer to: prefixes, timestamp, vLLM's site-packages, pid."""
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

    def render(self, template: str, **extra) -> str:
        return render(template, self.ctx(**extra))

    # ------------------------------------------------------------------ startup, in order
    def preamble(self, c: Config) -> None:
        out(f"INFO {ts()} [__init__.py:216] Automatically detected platform cuda.\n")
        self.api_line("INFO", "api_server.py:1839", f"vLLM API server version {c.version}")
        self.api_line("INFO", "utils.py:233", f"non-default args: {c.nd_args!r}")

    def model_resolved(self, c: Config) -> None:
        self.api_line("INFO", "model.py:547", f"Resolved architecture: {c.architecture}")
        self.api_line("INFO", "model.py:1510", f"Using max model len {c.max_model_len}")

    def engine_init(self, c: Config) -> None:
        mnbt = c.max_num_batched_tokens or (8192 if c.mode == "generate" else c.max_model_len)
        self.api_line(
            "INFO",
            "scheduler.py:205",
            f"Chunked prefill is enabled with max_num_batched_tokens={mnbt}.",
        )
        self.core_line("INFO", "core.py:644", "Waiting for init message from front-end.")
        self.core_line(
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
        if c.nnodes == 1:  # over several nodes, multinode.py logs each node's ranks once joined
            self.core_line(
                "INFO",
                "parallel_state.py:1208",
                f"rank 0 in world size {c.world} is assigned as DP rank 0, PP rank 0, TP rank 0, EP rank 0",
            )

    def loading_started(self, c: Config) -> None:
        self.core_line("INFO", "gpu_model_runner.py:2602", f"Starting to load model {c.model}...")
        self.core_line("INFO", "gpu_model_runner.py:2634", "Loading model from scratch...")
        self.core_line("INFO", "cuda.py:366", "Using Flash Attention backend on V1 engine.")
        self.shards(0)

    def shards(self, step: int) -> None:
        out(f"{self.core} Loading safetensors checkpoint shards: {SHARD_PROGRESS[step]}\n")

    def model_loaded(self, c: Config, load: float) -> None:
        self.shards(2)
        self.core_line(
            "INFO", "default_loader.py:267", f"Loading weights took {load * 0.5 + 0.01:.2f} seconds"
        )
        self.core_line(
            "INFO",
            "gpu_model_runner.py:2653",
            f"Model loading took {weights_gib(c):.4f} GiB and {load * 0.55 + 0.02:.6f} seconds",
        )

    def engine_initialized(self, c: Config, load: float) -> None:
        kv_gib = max(c.gpu_total_gib * c.util - weights_gib(c) - 2.1, 0.5)
        kv_tokens = int(kv_gib * 1024 * 1024 / 144)
        self.core_line("INFO", "gpu_worker.py:298", f"Available KV cache memory: {kv_gib:.2f} GiB")
        self.core_line("INFO", "kv_cache_utils.py:1087", f"GPU KV cache size: {kv_tokens:,} tokens")
        self.core_line(
            "INFO",
            "kv_cache_utils.py:1091",
            f"Maximum concurrency for {c.max_model_len:,} tokens per request: {kv_tokens / c.max_model_len:.2f}x",
        )
        self.core_line(
            "INFO",
            "core.py:210",
            f"init engine (profile, create kv cache, warmup model) took {load:.2f} seconds",
        )

    def waiting_for_core(self) -> None:
        """The line vLLM's API server repeats while its engine core never comes up."""
        self.api_line(
            "INFO",
            "utils.py:857",
            "Waiting for 1 local, 0 remote core engine proc(s) to start.",
        )

    def serving(self, c: Config, routes: dict[str, dict]) -> None:
        self.api_line(
            "INFO",
            "loggers.py:147",
            "Engine 000: vllm cache_config_info with initialization after num_gpu_blocks is: 23726",
        )
        self.api_line("INFO", "api_server.py:1634", f"Supported_tasks: {c.supported_tasks}")
        self.api_line(
            "INFO",
            "api_server.py:1912",
            f"Starting vLLM API server 0 on http://{c.host or '0.0.0.0'}:{c.port}",
        )
        self.api_line("INFO", "launcher.py:34", "Available routes are:")
        for path, methods in routes.items():
            self.api_line("INFO", "launcher.py:42", f"Route: {path}, Methods: {', '.join(methods)}")
        out(f"{self.api} INFO:     Started server process [{self.pid}]\n")
        out(f"{self.api} INFO:     Waiting for application startup.\n")
        out(f"{self.api} INFO:     Application startup complete.\n")

    # ------------------------------------------------------------------ while serving
    def access(self, req: Request, status: int) -> None:
        """uvicorn's access line (only with --enable-log-requests)."""
        host, port = (req.peer[0], req.peer[1]) if isinstance(req.peer, tuple) else ("-", 0)
        out(
            f'{self.api} INFO:     {host}:{port} - "{req.method} {req.target} HTTP/1.1" {status} {REASONS.get(status, "")}\n'
        )

    def shutdown(self) -> None:
        out(self.render(UVICORN_SHUTDOWN))
