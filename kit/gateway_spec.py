"""The stack file's ``gateway:`` and ``observability:`` sections (shape only; the plan decides
routes, the render lays them out).

``gateway:`` puts one endpoint in front of the whole stack: an existing gateway (the LiteLLM
proxy, pinned, built into a local image) routes every request by its ``model`` to the service
that serves it, balancing over replicas. ``observability:`` adds a Prometheus service that
scrapes every engine's and the gateway's ``/metrics``.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: LiteLLM's version, exact: two releases on PyPI (1.82.7, 1.82.8) were compromised, so the kit
#: never takes a range; 1.106.12 is the one measured here (README, "Gateway")
LITELLM_VERSION = "1.106.12"
DEFAULT_GATEWAY_IMAGE = f"kit-gateway-litellm:{LITELLM_VERSION}"
#: Debian bookworm's prometheus package, built into a local image (scripts/build-prometheus-image.sh)
PROMETHEUS_VERSION = "2.42.0"
DEFAULT_PROMETHEUS_IMAGE = f"kit-prometheus:{PROMETHEUS_VERSION}"
#: Grafana for GPU hosts (pulled there; Grafana cannot be installed in this project's tests)
DEFAULT_GRAFANA_IMAGE = "grafana/grafana:11.6.1"

#: LiteLLM router strategies the kit offers, by the kit's name
POLICIES: dict[str, str] = {
    "shuffle": "simple-shuffle",  # random, weighted equally: LiteLLM's fastest
    "least-busy": "least-busy",  # fewest requests in flight (per gateway process)
    "latency": "latency-based-routing",  # lowest recent latency
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_ip(v: str | None) -> str | None:
    if v is None:
        return v
    try:
        ipaddress.ip_address(v)
    except ValueError:
        raise ValueError(f"must be an IP address such as 127.0.0.1, got {v!r}") from None
    return v


class Gateway(_Model):
    #: the host port clients use for every model of the stack
    port: Annotated[int, Field(ge=1, le=65535)]
    #: default: defaults.bind_address
    bind_address: str | None = None
    #: the gateway software; only LiteLLM routes chat, embeddings and rerank by model here
    #: (vllm-router was measured and not chosen: README, "Gateway")
    engine: Literal["litellm"] = "litellm"
    #: how requests for one model are spread over its replicas
    policy: str = "shuffle"
    #: the gateway's image (default: the local build of scripts/build-gateway-image.sh)
    image: str = DEFAULT_GATEWAY_IMAGE
    #: retries on another replica after a connection error or 5xx (LiteLLM num_retries)
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    #: seconds a replica that failed stays out of rotation (LiteLLM cooldown_time)
    cooldown: Annotated[int, Field(ge=1, le=3600)] = 30
    #: seconds before a request through the gateway fails
    timeout: Annotated[int, Field(ge=1, le=24 * 3600)] = 1200
    #: gateway processes (LiteLLM --num_workers); each keeps its own view of failed replicas
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    #: with ``hosts:``: the host it runs on (default: the first host; kit.gateway_hosts)
    host: str | None = None

    @field_validator("bind_address")
    @classmethod
    def _bind(cls, v: str | None) -> str | None:
        return _check_ip(v)

    @field_validator("policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        if v not in POLICIES:
            raise ValueError(f"policy {v!r} is not one of {', '.join(POLICIES)}")
        return v

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        last = v.rsplit("/", 1)[-1]
        if "@sha256:" not in v and (":" not in last or last.endswith((":latest", ":"))):
            raise ValueError(f"gateway image {v!r} must have a pinned tag (not latest)")
        return v


class Grafana(_Model):
    """Grafana with the stack's Prometheus as its datasource and the kit's vLLM dashboard
    provisioned (for GPU hosts: the image comes from a registry there; not run in tests)."""

    port: Annotated[int, Field(ge=1, le=65535)] = 3000
    bind_address: str | None = None
    image: str = DEFAULT_GRAFANA_IMAGE

    @field_validator("bind_address")
    @classmethod
    def _bind(cls, v: str | None) -> str | None:
        return _check_ip(v)

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        return Gateway._image(v)


class Observability(_Model):
    #: host port of the Prometheus web UI and API (127.0.0.1 unless bind_address says otherwise)
    port: Annotated[int, Field(ge=1, le=65535)] = 9090
    bind_address: str | None = None
    image: str = DEFAULT_PROMETHEUS_IMAGE
    #: seconds between scrapes
    scrape_interval: Annotated[int, Field(ge=1, le=300)] = 5
    #: ``true`` or settings: add Grafana (GPU hosts; see README, "Observability")
    grafana: Grafana | None = None

    @field_validator("grafana", mode="before")
    @classmethod
    def _grafana(cls, v: Any) -> Any:
        return {} if v is True else (None if v is False else v)

    @model_validator(mode="before")
    @classmethod
    def _true(cls, v: Any) -> Any:
        return {} if v is True else v

    @field_validator("bind_address")
    @classmethod
    def _bind(cls, v: str | None) -> str | None:
        return _check_ip(v)
