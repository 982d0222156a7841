"""Render the gateway and Prometheus: their configuration files (templates
``gateway-litellm.yaml.j2`` and ``prometheus.yml.j2``) and their compose services
(``gateway-service.yaml.j2``, ``prometheus-service.yaml.j2``, included by ``compose.yaml.j2``).

The configuration files travel inside the compose file as ``configs:`` with ``content``, so
the one compose file is the whole deployment (``kit render`` shows everything). Every value is
computed here; the templates only lay them out.
"""

from __future__ import annotations

from typing import Any

from kit import __version__, observe_grafana
from kit.gateway_plan import (
    ENGINE_PORT,
    GATEWAY_CONTAINER_PORT,
    PROMETHEUS_CONTAINER_PORT,
    GatewayPlan,
    ObservabilityPlan,
)
from kit.gateway_spec import LITELLM_VERSION
from kit.stack_plan import Plan

GATEWAY_CONFIG = "gateway-config"
GATEWAY_CONFIG_PATH = "/etc/kit/gateway.yaml"
PROMETHEUS_CONFIG = "prometheus-config"
PROMETHEUS_CONFIG_PATH = "/etc/prometheus/kit.yml"
PROMETHEUS_VOLUME = "prometheus-data"
#: LiteLLM: failures of one deployment within a minute before it cools down (out of rotation)
ALLOWED_FAILS = 0
#: LiteLLM's provider for vLLM's OpenAI server (chat, completions, embeddings, rerank)
PROVIDER = "hosted_vllm"
#: the gateway's environment. LiteLLM caches DNS for 300 s by default: a replica that died or
#: was recreated (new address) would keep getting connections to its old address, which hang
#: in SYN_SENT; 1 s makes a dead replica's name fail at once (measured: README, "Replicas").
#: TCP keepalive finds a replica that vanished while a request was reading from it.
GATEWAY_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the cost map: starts offline
    "LITELLM_LOG": "ERROR",
    "AIOHTTP_TTL_DNS_CACHE": "1",
    "AIOHTTP_SO_KEEPALIVE": "True",
    "AIOHTTP_TCP_KEEPIDLE": "10",
    "AIOHTTP_TCP_KEEPINTVL": "5",
    "AIOHTTP_TCP_KEEPCNT": "3",
}


def _env():  # type: ignore[no-untyped-def]
    from kit.jinja_env import environment

    return environment()


def litellm_config(plan: Plan) -> str:
    """The LiteLLM proxy's config.yaml for the plan's gateway: one deployment per (model,
    replica); the API key only as ``os.environ/VLLM_API_KEY``, never its value."""
    g = plan.gateway
    assert g is not None
    deployments = []
    for r in g.routes:
        for i, b in enumerate(r.backends):
            deployments.append(
                {
                    "model": r.model,
                    "litellm_model": f"{PROVIDER}/{r.model}",
                    # another host's engine: its address and published port (kit.gateway_hosts)
                    "api_base": r.api_bases[i] if r.api_bases else f"http://{b}:{ENGINE_PORT}/v1",
                    "api_key": "os.environ/VLLM_API_KEY" if g.api_key else "none",
                    "id": f"{b}/{r.model}",
                }
            )
    return (
        _env()
        .get_template("gateway-litellm.yaml.j2")
        .render(
            kit_version=__version__,
            project=plan.stack.name,
            litellm_version=LITELLM_VERSION,
            deployments=deployments,
            strategy=g.strategy,
            retries=g.retries,
            allowed_fails=ALLOWED_FAILS,
            cooldown=g.cooldown,
            timeout=g.timeout,
            api_key=g.api_key,
        )
    )


def prometheus_config(plan: Plan) -> str:
    """Prometheus' configuration: one job per kind of target (vLLM engines, the gateway)."""
    o = plan.observability
    assert o is not None
    jobs: dict[str, list[dict[str, str]]] = {}
    for t in o.targets:
        jobs.setdefault(t.job, []).append(
            {
                "address": f"{t.host}:{t.port}",
                "service": t.service,
                "container": t.host,
                "kind": t.kind,
            }
        )
    return (
        _env()
        .get_template("prometheus.yml.j2")
        .render(
            kit_version=__version__,
            project=plan.stack.name,
            interval=f"{o.scrape_interval}s",
            jobs=[{"name": name, "targets": targets} for name, targets in jobs.items()],
        )
    )


def _labels(plan: Plan, name: str, kind: str) -> list[tuple[str, str]]:
    return sorted({"kit.stack": plan.stack.name, "kit.service": name, "kit.kind": kind}.items())


def gateway_service(plan: Plan) -> dict[str, Any]:
    g: GatewayPlan | None = plan.gateway
    assert g is not None
    key_file = plan.stack.api_key_file()
    models = ", ".join(g.models())
    return {
        "name": g.name,
        "summary": f"LiteLLM {LITELLM_VERSION}, {g.policy} over replicas; models: {models}",
        "image": g.image,
        "command": [
            "--config",
            GATEWAY_CONFIG_PATH,
            "--host",
            "0.0.0.0",
            "--port",
            str(GATEWAY_CONTAINER_PORT),
            "--num_workers",
            str(g.workers),
        ],
        "config_name": GATEWAY_CONFIG,
        "config_path": GATEWAY_CONFIG_PATH,
        "environment": sorted(GATEWAY_ENV.items()),
        "env_files": [str(key_file)] if key_file else [],
        "container_port": GATEWAY_CONTAINER_PORT,
        "port": g.port,
        "bind_address": g.bind_address,
        "health": ["CMD", "kit-gateway-probe"],
        "restart": plan.stack.defaults.restart,
        "labels": _labels(plan, g.name, "gateway"),
    }


def prometheus_service(plan: Plan) -> dict[str, Any]:
    o: ObservabilityPlan | None = plan.observability
    assert o is not None
    listen = f"0.0.0.0:{PROMETHEUS_CONTAINER_PORT}"
    return {
        "name": o.name,
        "summary": ", ".join(t.host for t in o.targets),
        "image": o.image,
        "command": [
            f"--config.file={PROMETHEUS_CONFIG_PATH}",
            "--storage.tsdb.path=/var/lib/prometheus/metrics2",
            "--storage.tsdb.retention.time=15d",
            f"--web.listen-address={listen}",
        ],
        "config_name": PROMETHEUS_CONFIG,
        "config_path": PROMETHEUS_CONFIG_PATH,
        "volume": PROMETHEUS_VOLUME,
        "container_port": PROMETHEUS_CONTAINER_PORT,
        "port": o.port,
        "bind_address": o.bind_address,
        # promtool 2.42 has no `check healthy`; an instant query needs a serving Prometheus
        "health": [
            "CMD",
            "promtool",
            "query",
            "instant",
            f"http://127.0.0.1:{PROMETHEUS_CONTAINER_PORT}",
            "vector(1)",
        ],
        "restart": plan.stack.defaults.restart,
        "labels": _labels(plan, o.name, "prometheus"),
    }


def compose_parts(plan: Plan) -> dict[str, Any]:
    """What ``compose.yaml.j2`` needs beside the engines: the auxiliary services, their
    ``configs`` (content with ``$`` doubled: compose interpolates the whole file) and volumes."""
    configs = []
    volumes = []
    if plan.gateway is not None:
        configs.append({"name": GATEWAY_CONFIG, "content": _escape(litellm_config(plan))})
    if plan.observability is not None:
        configs.append({"name": PROMETHEUS_CONFIG, "content": _escape(prometheus_config(plan))})
        volumes.append(PROMETHEUS_VOLUME)
    grafana = None
    if observe_grafana.enabled(plan):
        for name, content in observe_grafana.files(plan).items():
            configs.append({"name": name, "content": _escape(content)})
        grafana = observe_grafana.service(plan)
        volumes.append(grafana["volume"])
    return {
        "gateway": gateway_service(plan) if plan.gateway is not None else None,
        "prometheus": prometheus_service(plan) if plan.observability is not None else None,
        "grafana": grafana,
        "configs": configs,
        "aux_volumes": volumes,
    }


def _escape(text: str) -> str:
    return text.replace("$", "$$")


def plan_lines(plan: Plan) -> list[str]:
    """What ``kit plan`` says about the gateway and Prometheus (nothing without them)."""
    out = []
    g = plan.gateway
    if g is not None:
        out.append(
            f"gateway: LiteLLM {LITELLM_VERSION} at http://{g.bind_address}:{g.port}/v1, "
            f"{g.policy} over replicas, "
            + ("API key from the stack's env file" if g.api_key else "NO API key")
        )
        for r in g.routes:
            what = f"{r.kind}, LoRA adapter of {r.service}" if r.lora else r.kind
            # over hosts (kit.gateway_hosts): each backend's URL says where it is reached
            out.append(f"  {r.model} ({what}) -> {', '.join(r.api_bases or r.backends)}")
    o = plan.observability
    if o is not None:
        out.append(
            f"prometheus: http://{o.bind_address}:{o.port}, every {o.scrape_interval}s scrapes "
            + ", ".join(f"{t.host}:{t.port}" for t in o.targets)
        )
    return out
