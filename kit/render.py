"""Render a :class:`~kit.stack_plan.Plan` into a compose file with Jinja.

All decisions are made here in Python; the templates under ``templates/`` only lay out the
values (``StrictUndefined``: a missing value is an error, never an empty string). The output is
deterministic: the same plan renders to the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit import __version__, hub_cache
from kit.jinja_env import environment
from kit.service_plan import CONTAINER_PORT, ServicePlan
from kit.stack_plan import Plan
from kit.train.jobplan import ADAPTERS_MOUNT

HF_HOME = "/root/.cache/huggingface"
VLLM_CACHE = "/root/.cache/vllm"
HEALTH_INTERVAL_S = 5
HEALTH_TIMEOUT_S = 5
HEALTH_RETRIES = 3
LOG_MAX_SIZE = "100m"
LOG_MAX_FILE = 5
STOP_GRACE = "60s"
HEALTH_PROBE = (
    "import urllib.request; "
    f"urllib.request.urlopen('http://127.0.0.1:{CONTAINER_PORT}/health', timeout=4)"
)


@dataclass(frozen=True)
class RenderOptions:
    #: replace every service's image (tests swap in the engine double; nothing else changes)
    image: str | None = None


def render_compose(plan: Plan, options: RenderOptions | None = None) -> str:
    ctx = compose_context(plan, options or RenderOptions())
    return environment().get_template("compose.yaml.j2").render(**ctx)


def render_env(plan: Plan) -> str:
    """The project's ``.env``: compose settings only, never secrets."""
    return environment().get_template("project.env.j2").render(project=plan.stack.name)


def compose_context(plan: Plan, options: RenderOptions) -> dict[str, Any]:
    stack = plan.stack
    d = stack.defaults
    named_volumes = []
    if d.cache.hf is None:
        named_volumes.append("hf-cache")
    if d.cache.vllm is None:
        named_volumes.append("vllm-cache")
    from kit.gateway_render import compose_parts

    aux = compose_parts(plan)
    host = f"{stack.host.gpus} x {stack.host.gpu_model or 'GPU'} {stack.host.memory_gib:g} GiB"
    return {
        "kit_version": __version__,
        "source": Path(stack.source).name,
        "project": stack.name,
        "host": host,
        "vllm_version": d.vllm_version,
        "services": [_service(plan, s, options) for s in plan.services],
        "named_volumes": named_volumes + aux["aux_volumes"],
        **aux,
    }


def service_context(plan: Plan, s: ServicePlan, options: RenderOptions) -> dict[str, Any]:
    """The template context of one compose service (kit.multinode adapts it per host)."""
    return _service(plan, s, options)


def _service(plan: Plan, s: ServicePlan, options: RenderOptions) -> dict[str, Any]:
    stack = plan.stack
    d = stack.defaults
    volumes: list[dict[str, Any]] = []
    if s.model_host_path is not None:
        volumes.append(
            {"type": "bind", "source": s.model_host_path, "target": s.model_arg, "read_only": True}
        )
    if s.adapters_host_path is not None:  # the jobs' LoRA adapters (kit.train.serving)
        volumes.append(
            {"type": "bind", "source": s.adapters_host_path, "target": ADAPTERS_MOUNT,
             "read_only": True}
        )  # fmt: skip
    for host_path, name, target in (
        (d.cache.hf, "hf-cache", HF_HOME),
        (d.cache.vllm, "vllm-cache", VLLM_CACHE),
    ):
        if host_path is None:
            volumes.append({"type": "volume", "source": name, "target": target, "read_only": False})
        else:
            volumes.append(
                {
                    "type": "bind",
                    "source": stack.host_path(host_path),
                    "target": target,
                    "read_only": False,
                }
            )
    env = {"HF_HOME": HF_HOME}
    if d.hf_endpoint:
        env["HF_ENDPOINT"] = d.hf_endpoint
    if hub_cache.runs_offline(stack, s):  # `kit pull` filled the cache: the locked commit
        env["HF_HUB_OFFLINE"] = "1"
    env.update(s.env)
    key_file = stack.api_key_file()
    labels = {
        "kit.stack": stack.name,
        "kit.service": s.name,
        "kit.kind": s.kind,
        "kit.served-name": s.served_name,
        "kit.gpus": ",".join(map(str, s.gpus)),
        "kit.vllm-version": d.vllm_version,
    }
    if s.replica_of:
        labels["kit.replica-of"] = s.replica_of
    return {
        "name": s.name,
        "image": options.image or d.image,
        "entrypoint": ["vllm", "serve"],
        "network_mode": None,  # host networking: the multi-node parts (kit.multinode)
        "command": list(s.engine_args),
        "device_ids": [str(g) for g in s.gpus],
        "ipc": d.ipc,
        "shm_size": d.shm_size,
        "volumes": volumes,
        "environment": sorted(env.items()),
        "env_files": [str(key_file)] if key_file else [],
        "bind_address": d.bind_address,
        "port": s.port,
        "published": s.published,
        "container_port": CONTAINER_PORT,
        "health": {
            "test": ["CMD", "python3", "-c", HEALTH_PROBE],
            "interval": f"{HEALTH_INTERVAL_S}s",
            "timeout": f"{HEALTH_TIMEOUT_S}s",
            "retries": HEALTH_RETRIES,
            "start_period": f"{s.startup_timeout}s",
        },
        "depends_on": list(s.depends_on),
        "restart": d.restart,
        "stop_grace_period": STOP_GRACE,
        "log_max_size": LOG_MAX_SIZE,
        "log_max_file": str(LOG_MAX_FILE),
        "labels": sorted(labels.items()),
        "gpus_comment": f"GPU {','.join(map(str, s.gpus))} at {s.fraction:.2f}",
    }
