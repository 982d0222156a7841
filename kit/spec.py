"""Stack files: load YAML into a validated, typed :class:`Stack`.

This module checks the *shape* of a stack (types, ranges, names, pinned images). Rules that
need the whole stack or the machine (GPU ranges, sharing, fit) live in :mod:`kit.plan`.
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
    field_validator,
    model_validator,
)

from kit.errors import KitError, StackError
from kit.vllm_versions import Version

Kind = Literal["chat", "embed", "rerank"]
KINDS: tuple[str, ...] = ("chat", "embed", "rerank")

_SERVICE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SIZE = re.compile(r"^[0-9]+(\.[0-9]+)?[bkmg]?$", re.IGNORECASE)
#: vLLM flags the kit renders from typed fields; giving them in extra_args would fight the plan.
OWNED_FLAGS: dict[str, str] = {
    "--model": "model",
    "--served-model-name": "served_name",
    "--port": "port",
    "--host": "port (the kit binds the container port itself)",
    "--tensor-parallel-size": "tensor_parallel_size",
    "-tp": "tensor_parallel_size",
    "--pipeline-parallel-size": "pipeline_parallel_size",
    "-pp": "pipeline_parallel_size",
    "--gpu-memory-utilization": "gpu_memory_utilization",
    "--max-model-len": "max_model_len",
    "--reasoning-parser": "reasoning_parser",
    "--tool-call-parser": "tool_call_parser",
    "--trust-remote-code": "trust_remote_code",
    "--dtype": "dtype",
    "--api-key": "defaults.api_key_env_file (never put keys on the command line)",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Host(_Model):
    gpus: Annotated[int, Field(ge=1, le=64)] = 8
    gpu_memory_gib: Annotated[float, Field(gt=0, le=4096)]
    gpu_model: str | None = None


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
    vllm_version: str
    model_root: str | None = None
    cache: Cache = Cache()
    hf_endpoint: str | None = None
    bind_address: str = "127.0.0.1"
    api_key_env_file: str | None = None
    headroom: Annotated[float, Field(gt=0, le=1)] = 0.95
    ipc: Literal["host", "private"] = "host"
    shm_size: str | None = None
    restart: Literal["no", "always", "unless-stopped", "on-failure"] = "unless-stopped"
    env: dict[str, str] = Field(default_factory=dict)

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
    def _version(cls, v: Any) -> str:
        if isinstance(v, int | float) and not isinstance(v, bool):
            raise ValueError(f'write the version as a quoted string, e.g. "0.11.0" (got {v!r})')
        if not isinstance(v, str):
            raise ValueError('must be a version string such as "0.11.0"')
        Version.parse(v)  # raises ValueError with a message
        return v.lstrip("v")

    @field_validator("model_root")
    @classmethod
    def _root(cls, v: str | None) -> str | None:
        return _host_path(v)

    @field_validator("hf_endpoint")
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
        return Version.parse(self.vllm_version)


def _host_path(v: str | None) -> str | None:
    """Host folders: absolute, or relative to the stack file's folder (resolved by the plan)."""
    if v is not None and (not v.strip() or "\n" in v or ":" in v):
        raise ValueError(f"must be a host folder path without ':' or newlines, got {v!r}")
    return v


def _check_env(v: dict[str, str]) -> dict[str, str]:
    for key in v:
        if not _ENV_NAME.match(key):
            raise ValueError(f"environment variable name {key!r} is not valid")
        if key in ("VLLM_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
            raise ValueError(
                f"{key} must not be written in the stack: put it in the env file named by "
                "defaults.api_key_env_file"
            )
    return v


class Service(_Model):
    kind: Kind
    model: Annotated[str, Field(min_length=1)]
    model_source: Literal["local", "hub"] | None = None
    served_name: str | None = None
    gpus: int | tuple[int, ...]
    tensor_parallel_size: Annotated[int, Field(ge=1, le=64)] | None = None
    pipeline_parallel_size: Annotated[int, Field(ge=1, le=64)] = 1
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] | None = None
    max_model_len: Annotated[int, Field(ge=16)] | None = None
    port: Annotated[int, Field(ge=1, le=65535)]
    reasoning_parser: str | None = None
    tool_call_parser: str | None = None
    trust_remote_code: bool = False
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] = "auto"
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    startup_timeout: Annotated[int, Field(ge=10, le=24 * 3600)] | None = None

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, v: Any) -> int | tuple[int, ...]:
        if isinstance(v, bool):
            raise ValueError("must be a count (e.g. 2) or a list of GPU ids (e.g. [0, 1])")
        if isinstance(v, int):
            if v < 1:
                raise ValueError(f"a GPU count must be at least 1, got {v}")
            return v
        if isinstance(v, list | tuple):
            if not v:
                raise ValueError("the list of GPU ids is empty")
            if any(isinstance(i, bool) or not isinstance(i, int) for i in v):
                raise ValueError(f"GPU ids must be whole numbers, got {list(v)!r}")
            if len(set(v)) != len(v):
                raise ValueError(f"GPU ids repeat in {list(v)!r}")
            return tuple(v)
        raise ValueError("must be a count (e.g. 2) or a list of GPU ids (e.g. [0, 1])")

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
        return v.strip("/") if not v.startswith("/") else v


class Stack(_Model):
    name: str
    description: str | None = None
    host: Host
    defaults: Defaults
    services: dict[str, Service]
    #: where the stack was read from (not part of the YAML)
    source: str = Field(default="<memory>", exclude=True)
    #: the folder relative paths in the stack are resolved against
    base_dir: str = Field(default=".", exclude=True)

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
    if p.is_file():
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
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KitError(f"cannot read stack file {path}: {exc}") from None
    return parse_stack(text, source=str(path), default_name=path.stem, base_dir=path.parent)


def parse_stack(
    text: str,
    *,
    source: str = "<memory>",
    default_name: str | None = None,
    base_dir: Path | str = ".",
) -> Stack:
    """Parse and validate stack YAML text. Raises :class:`StackError`, never anything else."""
    label = _label(source, default_name)
    try:
        data = yaml.safe_load(text)
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
        data["name"] = default_name.lower()
    data["source"] = source
    data["base_dir"] = str(base_dir)
    try:
        return Stack.model_validate(data)
    except ValidationError as exc:
        raise StackError(label, [_format_error(e) for e in exc.errors()]) from None
    except (TypeError, ValueError, RecursionError) as exc:  # pragma: no cover - defensive
        raise StackError(label, [f"invalid stack: {exc}"]) from None


def _label(source: str, name: str | None) -> str:
    return f"'{name}' ({source})" if name else source


def _format_error(err: Any) -> str:
    loc = [str(p) for p in err.get("loc", ())]
    msg = str(err.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        msg = "unknown field (check the spelling; see README 'Stack file reference')"
    elif err.get("type") == "missing":
        msg = "required field is missing"
    if len(loc) >= 2 and loc[0] == "services":
        where = f"service '{loc[1]}'"
        if len(loc) > 2:
            where += f", field '{'.'.join(loc[2:])}'"
        return f"{where}: {msg}"
    if loc:
        return f"field '{'.'.join(loc)}': {msg}"
    return msg
