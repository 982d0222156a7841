"""Where a stack's model folders come from: the ``pull:`` field, the folders to fill, the hub
endpoint and the token.

A service names its source with ``pull: org/name`` or a mapping::

    pull:
      repo: deepseek-ai/DeepSeek-V3-0324   # the hub id
      revision: main                        # branch, tag or commit (the lock file pins a commit)
      hub: huggingface                      # the only hub so far (mirrors: hf_endpoint)

The folder it fills is the service's model folder (``model`` under ``model_root``). Several
services may share one folder; they must then name the same source. The token for gated or
private repositories is read from the stack's env file (``defaults.api_key_env_file``), never
from the stack file, and never printed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from kit.errors import KitError

if TYPE_CHECKING:
    from kit.plan import Plan

_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")
#: the hubs the kit can pull from, and their default endpoints (ModelScope: not yet)
HUBS = {"huggingface": "https://huggingface.co"}
#: env-file variables holding each hub's token, in the order they are looked up
TOKEN_VARS = {"huggingface": ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}


class PullSource(BaseModel):
    """A model folder's source on a hub (the service field ``pull``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    repo: str
    revision: str = "main"
    hub: Literal["huggingface"] = "huggingface"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):  # pull: org/name
            return {"repo": v}
        return v

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str) -> str:
        if not _REPO.match(v) or ".." in v:
            raise ValueError(f"must be a hub id such as deepseek-ai/DeepSeek-V3-0324, got {v!r}")
        return v

    @field_validator("revision")
    @classmethod
    def _revision(cls, v: str) -> str:
        if not _REVISION.match(v) or ".." in v:
            raise ValueError(f"must be a branch, tag or commit hash such as main, got {v!r}")
        return v


@dataclass(frozen=True)
class PullTarget:
    """One model folder to fill from one source."""

    #: the folder as the stack names it (the lock file's key)
    key: str
    folder: Path
    source: PullSource
    services: tuple[str, ...]
    #: any service of the folder sets trust_remote_code: custom code files are needed
    remote_code: bool


def targets(plan: Plan, services: list[str] | None = None) -> tuple[list[PullTarget], list[str]]:
    """The folders the stack (or the given services) can pull, and a note for each service
    that has nothing to pull. Raises :class:`KitError` for contradictions."""
    chosen = {s.name for s in plan.services}
    if services:
        for name in services:
            plan.service(name)  # a clear error for an unknown name
        chosen = set(services)
    found: dict[str, PullTarget] = {}
    notes: list[str] = []
    problems: list[str] = []
    for s in plan.services:
        if s.name not in chosen:
            continue
        svc = plan.stack.services[s.name]
        source = svc.pull
        if s.model_host_path is None:
            if source is not None:
                problems.append(
                    f"service '{s.name}': pull: names a source for a model folder, but the "
                    "service has model_source: hub (vLLM downloads it at start); set "
                    "model_root and give model as a folder under it"
                )
            else:
                notes.append(
                    f"{s.name}: model {s.model!r} comes from the hub at start (model_source: "
                    "hub); nothing to pull"
                )
            continue
        if source is None:
            notes.append(
                f"{s.name}: no pull: source for {s.model_host_path}; nothing to pull (add "
                "pull: <hub id> to the service to let the kit fetch it)"
            )
            continue
        folder = Path(s.model_host_path)
        key = str(folder)
        prev = found.get(key)
        if prev is not None:
            if prev.source != source:
                problems.append(
                    f"services '{prev.services[0]}' and '{s.name}' share the model folder "
                    f"{folder} but name different pull: sources ({_describe(prev.source)} vs "
                    f"{_describe(source)}); make them the same"
                )
                continue
            found[key] = PullTarget(
                key=prev.key,
                folder=folder,
                source=source,
                services=(*prev.services, s.name),
                remote_code=prev.remote_code or svc.trust_remote_code,
            )
            continue
        found[key] = PullTarget(
            key=svc.model,
            folder=folder,
            source=source,
            services=(s.name,),
            remote_code=svc.trust_remote_code,
        )
    if problems:
        raise KitError("cannot pull:\n  - " + "\n  - ".join(problems))
    return list(found.values()), notes


def _describe(source: PullSource) -> str:
    return f"{source.hub}:{source.repo}@{source.revision}"


def describe(source: PullSource) -> str:
    """``huggingface:org/name@main``: how the kit names a source in messages."""
    return _describe(source)


def endpoint(plan: Plan, hub: str) -> str:
    """The hub's endpoint: the stack's mirror (``defaults.hf_endpoint``), else ``HF_ENDPOINT``,
    else the public hub."""
    import os

    return (plan.stack.defaults.hf_endpoint or os.environ.get("HF_ENDPOINT") or HUBS[hub]).rstrip(
        "/"
    )


@dataclass(frozen=True)
class Token:
    """A hub token read from the env file. ``repr`` and ``str`` never show the value."""

    value: str | None
    #: where it was looked for: the env file's path, or None when the stack names none
    file: Path | None
    #: the variable it came from (or the first one looked for)
    variable: str

    def __repr__(self) -> str:
        state = "set" if self.value else "unset"
        return f"Token({self.variable} {state} in {self.file})"

    __str__ = __repr__


def token(plan: Plan, hub: str) -> Token:
    """The hub token from the stack's env file (never from the environment or the stack)."""
    names = TOKEN_VARS[hub]
    path = plan.stack.api_key_file()
    if path is None or not path.is_file():
        return Token(None, path, names[0])
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep:
            values[key.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    for name in names:
        if values.get(name):
            return Token(values[name], path, name)
    return Token(None, path, names[0])


def token_hint(tok: Token) -> str:
    """What to do to give the kit a token, naming the file and the variable (never a value)."""
    if tok.file is None:
        return f"set defaults.api_key_env_file to an env file (chmod 600) holding {tok.variable}=<token>"
    if not tok.file.is_file():
        return f"create {tok.file} (chmod 600) with a line {tok.variable}=<token>"
    return f"put a line {tok.variable}=<token> in {tok.file}"
