"""The simulated engine's configuration: vLLM's serve flags, the model folder and the environment,
resolved the way vLLM resolves them (model path, runner, GPUs, error shape by version)."""

from __future__ import annotations

import argparse
import json
import os

from .env import env_float, env_int, version_tuple, visible_gpu_count

DEFAULT_MODEL = "Qwen/Qwen3-0.6B"  # vLLM >= 0.10 serves this when no model is given


class Config:
    """What the simulated engine runs with: the parsed `vllm serve` flags, the model folder's
    config.json and the environment."""

    def __init__(self, ns: argparse.Namespace, version: str, nd_args: dict) -> None:
        self.version = version
        self.v = version_tuple(version)
        self.nd_args = nd_args
        self.model = ns.model_tag or ns.model or DEFAULT_MODEL  # vLLM prefers the positional one
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
        # vLLM's native multi-node launch (multinode.py): this node's share of the world
        self.nnodes = max(1, int(getattr(ns, "nnodes", 1) or 1))
        self.node_rank = int(getattr(ns, "node_rank", 0) or 0)
        self.master_addr = getattr(ns, "master_addr", "127.0.0.1")
        self.master_port = int(getattr(ns, "master_port", 29501))
        self.headless = bool(getattr(ns, "headless", False))
        self.backend = ns.distributed_executor_backend
        self.local_world = max(1, self.world // self.nnodes)
        first = self.node_rank * self.local_world
        self.local_ranks = list(range(first, first + self.local_world))
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
