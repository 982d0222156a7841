"""Stack files: load YAML into a validated, typed :class:`Stack`.

This module checks the *shape* of a stack (types, ranges, names, pinned images). Rules that
need the whole stack or the machine (GPU ranges, sharing, fit) live in :mod:`kit.plan`
(:mod:`kit.single_host_plan`, :mod:`kit.hosts`).
Nothing downstream of :func:`load_stack` reads the YAML again.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from kit import gpus as gpu_models
from kit import kinds
from kit.errors import KitError, StackError
from kit.gateway_spec import Gateway, Observability
from kit.hub_spec import PullSource
from kit.train.spec import Job, check_jobs
from kit.vllm_versions import Version

_SERVICE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SIZE = re.compile(r"^[0-9]+(\.[0-9]+)?[bkmg]?$", re.IGNORECASE)
#: environment variables that choose GPUs: the kit pins GPUs with device_ids, and these would
#: renumber or override what the engine exposes
GPU_VISIBILITY_ENV = (
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
)
SECRET_ENV = ("VLLM_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY")
#: values that look like credentials: Hugging Face, OpenAI-style, GitHub, AWS, bearer tokens
_TOKEN = re.compile(
    r"(?<![A-Za-z0-9])(hf_[A-Za-z0-9]{16,}|sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|AKIA[0-9A-Z]{16}|Bearer\s+\S{8,})"
)
#: host folders that are the root of a whole tree: never mounted as a model folder
_TREE_ROOTS = frozenset(
    [
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib64",
        "/media",
        "/mnt",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/srv",
        "/sys",
        "/tmp",
        "/usr",
        "/var",
        "/data",
    ]
)
#: a version at the start of an image tag: v0.11.0, 0.8.5-cu128, v0.10.1.1
_TAG_VERSION = re.compile(r"^v?(\d+\.\d+(?:\.\d+){0,2})(?![\d])")


def looks_like_secret(value: str) -> bool:
    """True when ``value`` holds something shaped like an access token."""
    return bool(_TOKEN.search(value))


def image_tag_version(image: str) -> str | None:
    """The vLLM version an image tag names (``vllm/vllm-openai:v0.8.5`` -> ``0.8.5``)."""
    if "@" in image:
        image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    m = _TAG_VERSION.match(last.rsplit(":", 1)[1])
    return m[1] if m else None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Host(_Model):
    gpus: Annotated[int, Field(ge=1, le=64)] = 8
    #: usable GiB per GPU (what vLLM sees); omitted: from gpu_model's table entry
    gpu_memory_gib: Annotated[float, Field(gt=0, le=4096)] | None = None
    gpu_model: str | None = None

    @model_validator(mode="after")
    def _memory_known(self) -> Host:
        if self.gpu_memory_gib is None:
            if self.gpu_model is None:
                raise ValueError(
                    "set gpu_memory_gib (usable GiB per GPU) or gpu_model (one of: "
                    f"{gpu_models.known()})"
                )
            if gpu_models.usable_gib(self.gpu_model) is None:
                raise ValueError(
                    f"gpu_model {self.gpu_model!r} is not a GPU the kit knows "
                    f"({gpu_models.known()}); set gpu_memory_gib to its usable GiB"
                )
        return self

    @property
    def memory_gib(self) -> float:
        """Usable GiB per GPU: the stack's figure, else the known model's."""
        if self.gpu_memory_gib is not None:
            return self.gpu_memory_gib
        usable = gpu_models.usable_gib(self.gpu_model or "")
        assert usable is not None  # checked by the validator
        return usable


class HostTLS(_Model):
    """Client certificates for a ``tcp://`` Docker endpoint (files on this machine)."""

    ca: str
    cert: str
    key: str


_DOCKER_URL = re.compile(r"^(unix://|tcp://|ssh://)\S+$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")


class HostEntry(Host):
    """One host of a stack that spans several (``hosts:``); its engine, GPUs and addresses.
    Rules that need the whole stack live in :mod:`kit.hosts`."""

    #: the host's Docker engine: unix:///..., ssh://user@host or tcp://host:2376 (with tls);
    #: omitted (and no context): the engine the docker CLI uses here
    docker: str | None = None
    #: a Docker context name instead of ``docker``
    context: str | None = None
    tls: HostTLS | None = None
    #: the host's address on the cluster network (VLLM_HOST_IP, Ray and master address)
    address: str | None = None
    #: its network interface on the cluster network (GLOO/NCCL/TP socket interface names)
    interface: str | None = None
    #: where the kit and clients reach ports published on this host; default: 127.0.0.1 for an
    #: engine on this machine (unix socket or the default), else ``address``
    api_address: str | None = None
    #: overrides defaults.bind_address on this host
    bind_address: str | None = None

    @field_validator("docker")
    @classmethod
    def _docker(cls, v: str | None) -> str | None:
        if v is not None and not _DOCKER_URL.match(v):
            raise ValueError(
                f"docker {v!r} is not a Docker endpoint: use unix:///var/run/docker.sock, "
                "ssh://user@host or tcp://host:2376 (or context: NAME)"
            )
        return v

    @field_validator("bind_address")
    @classmethod
    def _bind(cls, v: str | None) -> str | None:
        return None if v is None else Defaults._ip(v)

    @field_validator("interface")
    @classmethod
    def _ifname(cls, v: str | None) -> str | None:
        if v is not None and not _IFNAME.match(v):
            raise ValueError(f"interface {v!r} is not a network interface name such as eth0")
        return v

    @field_validator("address", "api_address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9.:-]*$", v):
            raise ValueError(f"{v!r} is not an IP address or host name")
        return v

    @model_validator(mode="after")
    def _engine(self) -> HostEntry:
        if self.docker is not None and self.context is not None:
            raise ValueError("give docker or context, not both")
        if self.tls is not None and not (self.docker or "").startswith("tcp://"):
            raise ValueError("tls goes with a tcp:// docker endpoint")
        return self


class MultiNode(_Model):
    """How a service that spans hosts is launched (vLLM's multi-node recipes)."""

    #: ray: a Ray head container runs vllm serve with the Ray executor, workers join it;
    #: native: vLLM's own --nnodes launch (from 0.11.1), the other hosts --headless.
    #: Omitted: native where the pinned version has it, else ray.
    backend: Literal["ray", "native"] | None = None
    #: the head's port: Ray's GCS port (default 6379) or vLLM's --master-port (default 29501)
    port: Annotated[int, Field(ge=1024, le=65000)] | None = None
    #: ray: worker ports per node, each node its own range after the fixed ports (needed when
    #: nodes share an address); omitted: Ray's default range, the same on every node
    ray_worker_ports: Annotated[int, Field(ge=16, le=20000)] | None = None


class Cache(_Model):
    """Host folders for caches; ``None`` keeps the cache in a named Docker volume."""

    hf: str | None = None
    vllm: str | None = None

    @field_validator("hf", "vllm")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        return _host_path(v)


class Defaults(_Model):
    image: str
    #: the vLLM version inside the image; omitted: read from the image tag
    vllm_version: str | None = Field(default=None, validate_default=True)
    model_root: str | None = None
    cache: Cache = Cache()
    hf_endpoint: str | None = None
    #: ModelScope's endpoint for `pull: {hub: modelscope}` (default https://modelscope.cn)
    modelscope_endpoint: str | None = None
    bind_address: str = "127.0.0.1"
    api_key_env_file: str | None = None
    headroom: Annotated[float, Field(gt=0, le=1)] = 0.95
    ipc: Literal["host", "private"] = "host"
    shm_size: str | None = None
    restart: Literal["no", "always", "unless-stopped", "on-failure"] = "unless-stopped"
    env: dict[str, str] = Field(default_factory=dict)
    #: host folder of LoRA adapters the stack's jobs write and its services serve (kit.train)
    adapters_root: str | None = None
    #: the training jobs' image (pinned TRL/PEFT/accelerate on a CUDA PyTorch base) and the
    #: TRL release inside it (the config keys are checked against it: kit/trl_versions.py)
    train_image: str | None = None
    trl_version: str = "1.16.0"

    @field_validator("train_image")
    @classmethod
    def _train_image(cls, v: str | None) -> str | None:
        return None if v is None else cls._pinned(v)

    @field_validator("image")
    @classmethod
    def _pinned(cls, v: str) -> str:
        if "@sha256:" in v:
            return v
        last = v.rsplit("/", 1)[-1]
        if ":" not in last:
            raise ValueError(f"image {v!r} has no tag: pin one, e.g. vllm/vllm-openai:v0.11.0")
        tag = last.rsplit(":", 1)[1]
        if tag in ("latest", ""):
            raise ValueError(
                f"image {v!r} uses the moving tag '{tag or 'latest'}': pin a version tag "
                "(e.g. vllm/vllm-openai:v0.11.0) so the flags match the engine"
            )
        return v

    @field_validator("vllm_version", mode="before")
    @classmethod
    def _version(cls, v: Any, info: ValidationInfo) -> str:
        image = info.data.get("image")
        tagged = image_tag_version(image) if isinstance(image, str) else None
        if v is None:
            if tagged is None:
                raise ValueError(
                    f"the image tag of {image!r} names no vLLM version: set vllm_version to "
                    'the version inside the image, e.g. "0.11.0"'
                )
            return tagged
        if isinstance(v, int | float) and not isinstance(v, bool):
            raise ValueError(f'write the version as a quoted string, e.g. "0.11.0" (got {v!r})')
        if not isinstance(v, str):
            raise ValueError('must be a version string such as "0.11.0"')
        given = Version.parse(v)  # raises ValueError with a message
        if tagged is not None and Version.parse(tagged) != given:
            raise ValueError(
                f"vllm_version {v!r} contradicts the image tag {image!r} (vLLM {tagged}): the "
                "flags are chosen by this version, so make them agree (or drop vllm_version "
                "to take the tag's)"
            )
        return v.lstrip("v")

    @field_validator("model_root", "adapters_root")
    @classmethod
    def _root(cls, v: str | None) -> str | None:
        return _host_path(v)

    @field_validator("hf_endpoint", "modelscope_endpoint")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"must be an http(s) URL such as https://hf-mirror.com, got {v!r}")
        return v

    @field_validator("bind_address")
    @classmethod
    def _ip(cls, v: str) -> str:
        try:
            ipaddress.ip_address(v)
        except ValueError:
            raise ValueError(
                f"must be an IP address such as 127.0.0.1 (or 0.0.0.0 to expose on every "
                f"interface), got {v!r}"
            ) from None
        return v

    @field_validator("shm_size")
    @classmethod
    def _shm(cls, v: str | None) -> str | None:
        if v is not None and not _SIZE.match(v):
            raise ValueError(f"must be a size such as 64g or 512m, got {v!r}")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_env(v)

    @model_validator(mode="after")
    def _ipc_or_shm(self) -> Defaults:
        if self.shm_size is not None and self.ipc == "host":
            raise ValueError(
                "shm_size has no effect with ipc: host; set ipc: private to use a sized /dev/shm"
            )
        return self

    @property
    def version(self) -> Version:
        assert self.vllm_version is not None  # filled from the tag or refused by the validator
        return Version.parse(self.vllm_version)


def _host_path(v: str | None) -> str | None:
    """Host folders: absolute, or relative to the stack file's folder (resolved by the plan)."""
    if v is not None and (not v.strip() or "\n" in v or ":" in v):
        raise ValueError(f"must be a host folder path without ':' or newlines, got {v!r}")
    return v


def _check_env(v: dict[str, str]) -> dict[str, str]:
    for key, value in v.items():
        if not _ENV_NAME.match(key):
            raise ValueError(f"environment variable name {key!r} is not valid")
        if key in SECRET_ENV or looks_like_secret(str(value)):
            raise ValueError(
                f"{key} must not be written in the stack (it is or holds a secret): put it in "
                "the env file named by defaults.api_key_env_file, which the compose file only "
                "references"
            )
        if key.upper() in GPU_VISIBILITY_ENV:
            raise ValueError(
                f"{key} contradicts the GPU pinning: the kit gives each container exactly its "
                "planned GPUs (device_ids); choose GPUs with the service's gpus field instead"
            )
    return v


class Service(_Model):
    kind: str
    model: Annotated[str, Field(min_length=1)]
    model_source: Literal["local", "hub"] | None = None
    #: where the model folder comes from (`kit pull`): a hub id, or repo/revision/hub
    pull: PullSource | None = None
    served_name: str | None = None
    gpus: int | tuple[int, ...]
    tensor_parallel_size: Annotated[int, Field(ge=1, le=64)] | None = None
    pipeline_parallel_size: Annotated[int, Field(ge=1, le=64)] = 1
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] | None = None
    max_model_len: Annotated[int, Field(ge=16)] | None = None
    #: host port; optional with a gateway (unpublished: reached through the gateway only)
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    #: containers of this service on disjoint GPU sets, one model name behind the gateway
    replicas: Annotated[int, Field(ge=1, le=64)] = 1
    #: vLLM's own data parallelism in ONE container (--data-parallel-size): DP x TP x PP GPUs
    data_parallel_size: Annotated[int, Field(ge=1, le=64)] = 1
    reasoning_parser: str | None = None
    tool_call_parser: str | None = None
    trust_remote_code: bool = False
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] = "auto"
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    startup_timeout: Annotated[int, Field(ge=10, le=24 * 3600)] | None = None
    #: serving LoRA adapters (kit.train): --max-lora-rank; default: the largest rank of the
    #: jobs that serve into it, rounded up to a size vLLM takes
    max_lora_rank: Annotated[int, Field(ge=1, le=512)] | None = None
    #: with ``hosts:``: the host it runs on (omitted: placed automatically)
    host: str | None = None
    #: with ``hosts:``: the hosts ONE model spans (first: the API server); gpus are per host
    hosts: tuple[str, ...] | None = None
    multinode: MultiNode | None = None

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, v: Any) -> int | tuple[int, ...]:
        return gpu_models.parse_gpus(v)

    @field_validator("extra_args", mode="before")
    @classmethod
    def _extra(cls, v: Any) -> tuple[str, ...]:
        if isinstance(v, dict):
            # {"max-num-seqs": 256, "enable-prefix-caching": true} -> flags
            out: list[str] = []
            for key, val in v.items():
                if not isinstance(key, str) or not key:
                    raise ValueError("extra_args keys must be flag names")
                flag = key if key.startswith("-") else f"--{key}"
                if val is True or val is None:
                    out.append(flag)
                elif val is False:
                    continue
                elif isinstance(val, str | int | float):
                    out += [flag, str(val)]
                else:
                    raise ValueError(f"extra_args {key!r} must be a scalar, got {val!r}")
            return tuple(out)
        if isinstance(v, list | tuple):
            if not all(isinstance(a, str | int | float) and not isinstance(a, bool) for a in v):
                raise ValueError("extra_args must be a list of strings")
            return tuple(str(a) for a in v)
        raise ValueError("extra_args must be a list of strings or a mapping of flag: value")

    @field_validator("served_name")
    @classmethod
    def _served(cls, v: str | None) -> str | None:
        if v is not None and (not v or any(c.isspace() for c in v)):
            raise ValueError(f"served_name must be non-empty without spaces, got {v!r}")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_env(v)

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        if ".." in PurePosixPath(v).parts:
            raise ValueError(f"model {v!r} must not contain '..'")
        if v.startswith("/"):
            norm = str(PurePosixPath(v))
            if norm in _TREE_ROOTS:
                raise ValueError(
                    f"model {v!r} is the root of a host tree, not a model folder: name the "
                    "folder that holds config.json"
                )
            return norm
        rel = str(PurePosixPath(v.strip("/")))
        if rel in (".", ""):
            raise ValueError(
                f"model {v!r} is model_root itself: name the model's folder under model_root"
            )
        return rel

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in kinds.KINDS:
            known = ", ".join(f"'{k}'" for k in kinds.names())
            raise ValueError(f"kind {v!r} is not one the kit knows; use one of {known}")
        return v


class Stack(_Model):
    name: str
    description: str | None = None
    #: one host (``host:``) or several (``hosts:``, see :mod:`kit.hosts`): exactly one is set
    host: Host | None = None
    hosts: dict[str, HostEntry] | None = None
    defaults: Defaults
    services: dict[str, Service]
    #: training jobs (kit/train/spec.py), run one at a time by `kit train`
    jobs: dict[str, Job] = Field(default_factory=dict)
    #: one endpoint for every model (kit/gateway_spec.py)
    gateway: Gateway | None = None
    #: a Prometheus service scraping every engine (``true`` or settings)
    observability: Observability | None = None
    #: where the stack was read from (not part of the YAML)
    source: str = Field(default="<memory>", exclude=True)
    #: the folder relative paths in the stack are resolved against
    base_dir: str = Field(default=".", exclude=True)
    #: the file name the project name was derived from, when the stack sets no name
    name_from_file: str | None = Field(default=None, exclude=True)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _PROJECT_NAME.match(v):
            raise ValueError(
                f"stack name {v!r} must be lowercase letters, digits, '-' or '_' "
                "(it becomes the compose project name)"
            )
        return v

    @field_validator("services")
    @classmethod
    def _services(cls, v: dict[str, Service]) -> dict[str, Service]:
        if not v:
            raise ValueError("a stack needs at least one service")
        for name in v:
            if not _SERVICE_NAME.match(name):
                raise ValueError(
                    f"service name {name!r} must be lowercase letters, digits, '.', '-' or '_'"
                )
        return v

    @field_validator("jobs")
    @classmethod
    def _jobs(cls, v: dict[str, Job], info: ValidationInfo) -> dict[str, Job]:
        if v and info.data.get("hosts") is not None:
            raise ValueError("training jobs run on a stack of one host (host:), not hosts:")
        return check_jobs(v)

    @field_validator("observability", mode="before")
    @classmethod
    def _observability(cls, v: Any) -> Any:
        return None if v is False else v

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: dict[str, HostEntry] | None) -> dict[str, HostEntry] | None:
        if v is not None:
            if not v:
                raise ValueError("hosts is empty: name at least one host, or use host:")
            for name in v:
                if not _PROJECT_NAME.match(name):
                    raise ValueError(
                        f"host name {name!r} must be lowercase letters, digits, '-' or '_'"
                    )
        return v

    @model_validator(mode="after")
    def _one_host_section(self) -> Stack:
        if (self.host is None) == (self.hosts is None):
            raise ValueError(
                "give host: (one host) or hosts: (several, each with its Docker engine), "
                + ("not both" if self.host is not None else "one of them is required")
            )
        return self

    def host_path(self, p: str) -> str:
        """A host path from the stack: ``~`` expanded, relative ones against its folder."""
        path = Path(p).expanduser()
        return str(path if path.is_absolute() else (Path(self.base_dir) / path).resolve())

    def api_key_file(self) -> Path | None:
        """The env file holding VLLM_API_KEY, resolved against the stack's folder."""
        if self.defaults.api_key_env_file is None:
            return None
        return Path(self.host_path(self.defaults.api_key_env_file))


# --- loading -------------------------------------------------------------------------------


def resolve_stack_path(ref: str | Path, stacks_dir: Path | None = None) -> Path:
    """A stack is a path, or a name under ``stacks/`` (with or without ``.yaml``)."""
    p = Path(ref)
    if p.exists():  # a directory or an unreadable file is reported by the reader, exit 2
        return p
    base = stacks_dir if stacks_dir is not None else default_stacks_dir()
    for cand in (base / str(ref), base / f"{ref}.yaml", base / f"{ref}.yml"):
        if cand.is_file():
            return cand
    known = ", ".join(sorted(x.stem for x in list_stacks(base))) or "none"
    raise KitError(
        f"no stack {str(ref)!r}: not a file, and not a name under {base}/",
        hint=f"stacks there: {known}",
    )


def default_stacks_dir() -> Path:
    cwd = Path.cwd() / "stacks"
    if cwd.is_dir():
        return cwd
    repo = Path(__file__).resolve().parent.parent / "stacks"
    if repo.is_dir():
        return repo
    return Path(__file__).resolve().parent / "stacks"


def list_stacks(stacks_dir: Path | None = None) -> list[Path]:
    base = stacks_dir if stacks_dir is not None else default_stacks_dir()
    if not base.is_dir():
        return []
    return sorted([*base.glob("*.yaml"), *base.glob("*.yml")])


def load_stack(ref: str | Path, stacks_dir: Path | None = None) -> Stack:
    path = resolve_stack_path(ref, stacks_dir)
    text = read_stack_text(path)
    return parse_stack(text, source=str(path), default_name=path.name, base_dir=path.parent)


def read_stack_text(path: Path) -> str:
    """The stack file's text; an unreadable file is an invalid stack (exit 2) with the reason."""
    label = str(path)
    if path.is_dir():
        raise StackError(label, ["is a directory, not a stack file: name a .yaml file"])
    try:
        data = path.read_bytes()
    except PermissionError:
        raise StackError(
            label, ["cannot be read: permission denied (check its owner and mode, e.g. chmod 644)"]
        ) from None
    except OSError as exc:
        raise StackError(label, [f"cannot be read: {exc.strerror or exc}"]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise StackError(
            label,
            [f"is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save it as UTF-8"],
        ) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (YAML keeps the last one
    silently, which drops a whole service or field)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            line = key_node.start_mark.line + 1
            if first is not None:
                raise _DuplicateKey(
                    f"key {key!r} appears twice in one mapping, at lines {first} and {line}: "
                    "YAML would keep only the second; remove or rename one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    pass


def project_name_from_file(file_name: str) -> str:
    """A compose-safe project name from a stack file name: ``llm-v0.11.yaml`` -> ``llm-v0-11``."""
    stem = re.sub(r"\.ya?ml$", "", file_name, flags=re.IGNORECASE)
    name = re.sub(r"[^a-z0-9_-]+", "-", stem.lower()).strip("-_")
    return name or "stack"


def parse_stack(
    text: str,
    *,
    source: str = "<memory>",
    default_name: str | None = None,
    base_dir: Path | str = ".",
) -> Stack:
    """Parse and validate stack YAML text. Raises :class:`StackError`, never anything else.

    ``default_name`` is the file name; a stack without ``name`` takes a compose-safe project
    name derived from it (and the plan says so).
    """
    label = _label(source, default_name)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except _DuplicateKey as exc:
        raise StackError(label, [str(exc)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise StackError(label, [f"not valid YAML{where}: {exc.problem or exc}"]) from None
    except (yaml.YAMLError, ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise StackError(label, [f"not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise StackError(
            label, [f"the stack file must be a mapping with host, defaults and services; got {got}"]
        )
    data = dict(data)
    if "name" not in data and default_name is not None:
        data["name"] = project_name_from_file(default_name)
        data["name_from_file"] = default_name
    data["source"] = source
    data["base_dir"] = str(base_dir)
    try:
        return Stack.model_validate(data)
    except ValidationError as exc:
        raise StackError(label, [_format_error(e) for e in exc.errors()]) from None
    except (TypeError, ValueError, RecursionError) as exc:  # pragma: no cover - defensive
        raise StackError(label, [f"invalid stack: {exc}"]) from None


def _label(source: str, name: str | None) -> str:
    if name is None or source.endswith(name):
        return source
    return f"'{name}' ({source})"


def _format_error(err: Any) -> str:
    loc = [str(p) for p in err.get("loc", ())]
    msg = str(err.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        msg = "unknown field (check the spelling; see README 'Stack file reference')"
    elif err.get("type") == "missing":
        msg = "required field is missing"
    if len(loc) >= 2 and loc[0] in ("services", "jobs"):
        where = f"{loc[0][:-1]} '{loc[1]}'"
        if len(loc) > 2:
            where += f", field '{'.'.join(loc[2:])}'"
        return f"{where}: {msg}"
    if loc:
        return f"field '{'.'.join(loc)}': {msg}"
    return msg
