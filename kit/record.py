"""The deployment record: what ``kit up`` deployed, kept beside the compose file.

``kit up`` writes ``deployment.json`` into the project folder
(``$KIT_STATE_DIR/projects/<name>/``, see :func:`kit.engine.state_dir`). It holds the resolved
plan, exactly: :func:`plan_from_record` turns it back into the same :class:`~kit.stack_plan.Plan`,
so ``down``, ``status``, ``logs``, ``smoke``, ``bench`` and ``batch`` act on what runs, not
on what the stack file says today (it may have been edited, moved or deleted since).

Format (JSON, written atomically; ``schema`` is :data:`SCHEMA`, bumped on incompatible
changes)::

    schema, kit_version, written_at, started_at (ISO 8601, UTC)
    state            starting | ready | failed   (failed: kept by --keep-on-failure)
    detail           why it failed, else ""
    torn_down        (optional) multi-node services `kit watch` took down on every host after a
                     node was lost: service -> {at, host, part, container, why, cause, left}
    project          the compose project name
    stack            {name, file (resolved path or null), sha256 (of the file's bytes), base_dir}
    vllm_version, bind_address
    api_key_env_file the env file's resolved path (the key itself is never read here)
    image            {stack: the stack's image, override: the --image given to kit up or null}
    services         per service, for people and tools: name, kind, served_name, gpus,
                     fraction, port, url, image, image_override, engine_args, depends_on,
                     replica_of (replicas: the stack's service)
    gateway          with a gateway: its url and every model it lists
    plan             the Plan itself (the stack model and every ServicePlan field), the part
                     read back

Lookup (:func:`find`), for a STACK argument (a path, or a name under ``stacks/``):

1. a record whose ``stack.file`` is where STACK points (the paths ``kit`` tries for STACK,
   whether or not the file still exists); the YAML is not read;
2. else, if STACK is an existing stack file: the record of the project it names;
3. else the record of the project named STACK (or named after the file STACK was).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import re
import types
import typing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from kit import __version__
from kit.errors import KitError
from kit.spec import Stack
from kit.stack_plan import Plan

if TYPE_CHECKING:
    from kit.render import RenderOptions

SCHEMA = 1
FILE_NAME = "deployment.json"
STATES = ("starting", "ready", "failed")

_PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class RecordError(KitError):
    """A deployment record exists but cannot be used (corrupt, or from another kit version)."""

    def __init__(self, project: str, path: Path, why: str) -> None:
        super().__init__(
            f"deployment record {path} of '{project}' cannot be read: {why}",
            hint=f"`kit down {project}` still removes what runs; `kit up` writes a new record",
        )
        self.project = project
        self.path = path


@dataclass(frozen=True)
class Deployment:
    """A deployment record, read back."""

    plan: Plan
    folder: Path
    state: str
    detail: str
    #: the stack file, resolved, when the stack came from a file
    stack_file: str | None
    sha256: str | None
    image_override: str | None
    kit_version: str
    started_at: str
    written_at: str
    #: services `kit watch` tore down after losing a node (kit.multinode_watch)
    torn_down: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.plan.stack.name

    @property
    def render_options(self) -> RenderOptions:
        from kit.render import RenderOptions

        return RenderOptions(image=self.image_override)

    def drift(self) -> str | None:
        """Why the stack file no longer describes what runs, or None when it still does."""
        if self.stack_file is None:
            return None
        path = Path(self.stack_file)
        if not path.is_file():
            return f"the stack file {path} is gone; this is what `kit up` deployed from it"
        if file_sha256(path) != self.sha256:
            return (
                f"the stack file {path} changed since `kit up` (sha256 differs); this is what "
                "runs: `kit up` applies the file"
            )
        return None


# --- writing -------------------------------------------------------------------------------


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def record_path(folder: Path) -> Path:
    return folder / FILE_NAME


def stack_file(stack: Stack) -> Path | None:
    """The file ``stack`` was read from, resolved; None for stacks made in memory."""
    if not stack.source or stack.source.startswith("<"):
        return None
    return Path(stack.source).expanduser().resolve()


def file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def to_record(
    plan: Plan,
    *,
    image_override: str | None = None,
    state: str = "ready",
    detail: str = "",
    started_at: str | None = None,
    torn_down: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    from kit.client import endpoint_for

    if state not in STATES:
        raise ValueError(f"state {state!r} is not one of {STATES}")
    stack = plan.stack
    d = stack.defaults
    source = stack_file(stack)
    key_file = stack.api_key_file()
    services = []
    for s in plan.services:
        services.append(
            {
                "name": s.name,
                "kind": s.kind,
                "served_name": s.served_name,
                "gpus": list(s.gpus),
                "fraction": s.fraction,
                "port": s.port,
                "url": endpoint_for(plan, s).base_url
                if s.published
                else f"http://{s.name}:8000 (stack network, through the gateway)",
                "replica_of": s.replica_of,
                "image": image_override or d.image,
                "image_override": image_override is not None,
                "engine_args": list(s.engine_args),
                "depends_on": list(s.depends_on),
                # a stack over several hosts (kit.hosts): where it runs, its parts elsewhere
                **({"host": s.host} if s.host else {}),
                **({"nodes": [{"host": n.host, "rank": n.rank, "container": n.name,
                               "gpus": list(n.gpus)} for n in s.nodes]} if s.nodes else {}),
            }
        )  # fmt: skip
    now = utc_now()
    return {
        "schema": SCHEMA,
        "kit_version": __version__,
        "written_at": now,
        "started_at": started_at or now,
        "state": state,
        "detail": detail,
        **({"torn_down": torn_down} if torn_down else {}),
        "project": stack.name,
        "stack": {
            "name": stack.name,
            "file": str(source) if source else None,
            "sha256": file_sha256(source) if source else None,
            "base_dir": stack.base_dir,
        },
        "vllm_version": d.vllm_version,
        "bind_address": d.bind_address,
        "api_key_env_file": str(key_file) if key_file else None,
        "image": {"stack": d.image, "override": image_override},
        "services": services,
        **({"hosts": _hosts(plan)} if stack.hosts is not None else {}),
        **({"gateway": _gateway(plan)} if plan.gateway is not None else {}),
        "plan": _encode(plan),
    }


def _hosts(plan: Plan) -> dict[str, Any]:
    from kit.hosts import record_hosts

    return record_hosts(plan)


def write(
    folder: Path,
    plan: Plan,
    *,
    image_override: str | None = None,
    state: str = "ready",
    detail: str = "",
    started_at: str | None = None,
    torn_down: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Write the record of ``plan`` into ``folder`` atomically; returns its path."""
    data = to_record(
        plan,
        image_override=image_override,
        state=state,
        detail=detail,
        started_at=started_at,
        torn_down=torn_down,
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = record_path(folder)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def remove(folder: Path) -> None:
    record_path(folder).unlink(missing_ok=True)


# --- reading -------------------------------------------------------------------------------


def plan_from_record(data: dict[str, Any]) -> Plan:
    """The :class:`Plan` a record holds (raises ``ValueError``/``TypeError`` if it doesn't)."""
    return _decode(Plan, data["plan"])


def from_record(data: dict[str, Any], folder: Path) -> Deployment:
    name = str(data.get("project") or folder.name)
    path = record_path(folder)
    schema = data.get("schema")
    if schema != SCHEMA:
        raise RecordError(
            name, path, f"schema {schema!r}, this kit {__version__} reads schema {SCHEMA}"
        )
    try:
        plan = plan_from_record(data)
        stack = data["stack"]
        image = data["image"]
        return Deployment(
            plan=plan,
            folder=folder,
            state=str(data["state"]),
            detail=str(data.get("detail", "")),
            stack_file=stack.get("file"),
            sha256=stack.get("sha256"),
            image_override=image.get("override"),
            kit_version=str(data.get("kit_version", "?")),
            started_at=str(data.get("started_at", "?")),
            written_at=str(data.get("written_at", "?")),
            torn_down=dict(data.get("torn_down") or {}),
        )
    except (KeyError, TypeError, ValueError, AttributeError, ValidationError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RecordError(
            name, path, f"written by kit {data.get('kit_version', '?')}: {why}"
        ) from None


def read(folder: Path) -> Deployment | None:
    """The record in ``folder``; None if there is none."""
    path = record_path(folder)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RecordError(folder.name, path, str(exc)) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RecordError(folder.name, path, f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RecordError(folder.name, path, "not a JSON object")
    return from_record(data, folder)


def projects_root() -> Path:
    from kit.engine import state_dir

    return state_dir() / "projects"


def all_records() -> list[Path]:
    """The project folders that hold a record."""
    root = projects_root()
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob(f"*/{FILE_NAME}"))


def _recorded_file(folder: Path) -> str | None:
    """``stack.file`` of a record, without building its plan (None if unreadable)."""
    try:
        data = json.loads(record_path(folder).read_text(encoding="utf-8"))
        return data["stack"]["file"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _candidate_paths(ref: str | Path, stacks_dir: Path | None) -> list[Path]:
    """Where ``kit`` looks for STACK (see :func:`kit.spec.resolve_stack_path`), resolved,
    whether or not the files exist."""
    from kit.spec import default_stacks_dir

    base = stacks_dir if stacks_dir is not None else default_stacks_dir()
    out: list[Path] = []
    for cand in (Path(ref), base / str(ref), base / f"{ref}.yaml", base / f"{ref}.yml"):
        resolved = cand.expanduser().resolve()
        if resolved not in out:
            out.append(resolved)
    return out


def find(ref: str | Path, *, stacks_dir: Path | None = None) -> Deployment | None:
    """The deployment of STACK ``ref`` (see the module doc for the rules), or None.

    Raises :class:`RecordError` when the matching record cannot be read, and
    :class:`KitError` when several deployments come from the same stack file.
    """
    folders = all_records()
    for cand in _candidate_paths(ref, stacks_dir):
        hits = [f for f in folders if _recorded_file(f) == str(cand)]
        if len(hits) > 1:
            names = ", ".join(f.name for f in hits)
            raise KitError(
                f"several deployments come from {cand}: {names}",
                hint="name the one you mean by its project name",
            )
        if hits:
            return read(hits[0])
    from kit.engine import project_folder
    from kit.spec import load_stack, resolve_stack_path

    try:
        path = resolve_stack_path(ref, stacks_dir)
    except KitError:
        path = None
    if path is not None:
        try:
            name = load_stack(path).name
        except KitError:
            return None
        return read(project_folder(name))
    for name in dict.fromkeys((str(ref), Path(ref).stem.lower())):
        if _PROJECT_NAME.match(name):
            found = read(project_folder(name))
            if found is not None:
                return found
    return None


def deployed(ref: str | Path, *, stacks_dir: Path | None = None) -> Deployment:
    """The deployment of STACK ``ref``; a :class:`KitError` when it is not up."""
    found = find(ref, stacks_dir=stacks_dir)
    if found is None:
        raise KitError(
            f"stack {str(ref)!r} is not up: no deployment record; run `kit up {ref}`",
            hint=f"deployment records are under {projects_root()}",
        )
    return found


# --- a Plan as JSON and back ---------------------------------------------------------------


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, BaseModel):
        # every field, those excluded from model_dump (source, base_dir, ...) too
        return {name: _encode(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        return [_encode(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"cannot record a {type(value).__name__}")


_SCALARS: dict[type, tuple[type, ...]] = {
    bool: (bool,),
    int: (int,),
    float: (int, float),
    str: (str,),
}


def _decode(tp: Any, value: Any) -> Any:
    """``value`` (from JSON) as an instance of the annotation ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if tp is type(None) or tp is None:
        if value is not None:
            raise TypeError(f"expected null, got {value!r}")
        return None
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _decode(arg, value)
            except (TypeError, ValueError, ValidationError) as exc:
                errors.append(str(exc))
        raise TypeError(f"{value!r} fits none of {tp}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{value!r} is not one of {args}")
        return value
    if origin is tuple:
        _expect(value, list)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v) for v in value)
        if len(args) != len(value):
            raise TypeError(f"expected {len(args)} items, got {len(value)}")
        return tuple(_decode(a, v) for a, v in zip(args, value, strict=True))
    if origin in (list, set, frozenset):
        _expect(value, list)
        return origin(_decode(args[0] if args else Any, v) for v in value)
    if origin is dict:
        _expect(value, dict)
        kt, vt = args or (Any, Any)
        return {_decode_key(kt, k): _decode(vt, v) for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, value)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        _expect(value, dict)
        return tp.model_validate(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp in _SCALARS:
        if not isinstance(value, _SCALARS[tp]) or (tp is not bool and isinstance(value, bool)):
            raise TypeError(f"expected {tp.__name__}, got {value!r}")
        return tp(value)
    raise TypeError(f"cannot read a {tp!r} from a record")


def _decode_key(tp: Any, key: str) -> Any:
    if tp is int:
        return int(key)
    if tp is float:
        return float(key)
    return key


def _expect(value: Any, kind: type) -> None:
    if not isinstance(value, kind):
        raise TypeError(f"expected a JSON {kind.__name__}, got {value!r}")


def _decode_dataclass(cls: type, value: Any) -> Any:
    _expect(value, dict)
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in value:
            kwargs[f.name] = _decode(hints[f.name], value[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{cls.__name__}.{f.name} is missing")
    return cls(**kwargs)


def _gateway(plan: Plan) -> dict[str, Any]:
    """The gateway's address and models, for people and tools (the plan holds the rest)."""
    g = plan.gateway
    assert g is not None
    return {"url": f"http://{g.bind_address}:{g.port}/v1", "models": list(g.models())}
