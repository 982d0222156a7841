"""Where a stack's model folders come from: the ``pull:`` field, the folders to fill, the hub
endpoint and the token.

A service names its source with ``pull: org/name`` or a mapping::

    pull:
      repo: deepseek-ai/DeepSeek-V3-0324   # the hub id
      revision: main                        # branch, tag or commit (the lock file pins a commit)
      hub: huggingface                      # or modelscope (defaults.modelscope_endpoint)

The folder it fills is the service's model folder (``model`` under ``model_root``). Several
services may share one folder; they must then name the same source. The token for gated or
private repositories is read from the stack's env file (``defaults.api_key_env_file``), never
from the stack file, and never printed.

A ``model_source: hub`` service (``model`` is the hub id; ``pull:`` optional) is pulled into
the HF cache its container mounts (``defaults.cache.hf``), in the library's own layout
(:mod:`kit.hub_cache`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.errors import KitError
from kit.hub_spec import REPO_ID as _REPO
from kit.hub_spec import PullSource
from kit.hub_token import Token

if TYPE_CHECKING:
    from kit.stack_plan import Plan

#: the hubs the kit can pull from, and their default endpoints
HUBS = {"huggingface": "https://huggingface.co", "modelscope": "https://modelscope.cn"}
#: env-file variables holding each hub's token, in the order they are looked up
TOKEN_VARS = {
    "huggingface": ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"),
    "modelscope": ("MODELSCOPE_API_TOKEN",),
}


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
    #: a ``model_source: hub`` service's repository in the host's HF cache (kit.hub_cache):
    #: ``folder`` is then ``HF_HOME/hub/models--ORG--NAME``
    cache: bool = False


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
            cached = _cache_target(plan, s.name, svc, problems, notes)
            if cached is not None:
                _add(found, cached, svc.trust_remote_code, problems)
            continue
        if source is None:
            notes.append(
                f"{s.name}: no pull: source for {s.model_host_path}; nothing to pull (add "
                "pull: <hub id> to the service to let the kit fetch it)"
            )
            continue
        target = PullTarget(svc.model, Path(s.model_host_path), source, (s.name,), False)
        _add(found, target, svc.trust_remote_code, problems)
    if problems:
        raise KitError("cannot pull:\n  - " + "\n  - ".join(problems))
    return list(found.values()), notes


def _add(found: dict[str, PullTarget], t: PullTarget, remote_code: bool,
         problems: list[str]) -> None:  # fmt: skip
    """Add a service's folder; services sharing one must name the same source."""
    key = str(t.folder)
    prev = found.get(key)
    if prev is None:
        found[key] = replace(t, remote_code=remote_code)
    elif prev.source != t.source:
        problems.append(
            f"services '{prev.services[0]}' and '{t.services[0]}' share the model folder "
            f"{t.folder} but name different pull: sources ({_describe(prev.source)} vs "
            f"{_describe(t.source)}); make them the same"
        )
    else:
        found[key] = replace(
            prev,
            services=(*prev.services, *t.services),
            remote_code=prev.remote_code or remote_code,
        )


def _cache_target(plan: Plan, name: str, svc: Any, problems: list[str],
                  notes: list[str]) -> PullTarget | None:  # fmt: skip
    """A ``model_source: hub`` service: its repository in the HF cache the container mounts
    (``defaults.cache.hf``), or None with a note or a problem."""
    from kit.hub_cache import repo_folder

    where = f"service '{name}'"
    if svc.pull is None and not _REPO.match(svc.model):
        notes.append(f"{name}: model {svc.model!r} is not a hub id; nothing to pull")
        return None
    source = svc.pull or PullSource(repo=svc.model)
    if svc.pull is not None and svc.pull.repo != svc.model:
        problems.append(
            f"{where}, field 'pull': the service has model_source: hub, so vLLM loads "
            f"{svc.model!r} from the HF cache; pull: names {svc.pull.repo!r}: make them the same "
            "(or give model as a folder under model_root)"
        )
        return None
    if source.hub != "huggingface":
        problems.append(
            f"{where}, field 'pull': a model_source: hub service is loaded by vLLM from the "
            "Hugging Face cache; pull from ModelScope into a folder under model_root instead"
        )
        return None
    if source.revision != "main":
        problems.append(
            f"{where}, field 'pull': revision {source.revision!r}: vLLM loads main from the HF "
            "cache, so a model_source: hub service pulls main (the lock file pins its commit); "
            "for another revision give model as a folder under model_root"
        )
        return None
    hf = plan.stack.defaults.cache.hf
    if hf is None:
        text = (
            f"{name}: model {svc.model!r} comes from the hub into the hf-cache volume at start "
            "(vLLM downloads it); set defaults.cache.hf to a host folder to let kit pull fetch "
            "it, verified and locked"
        )
        if svc.pull is not None:
            problems.append(f"{where}, field 'pull': {text}")
        else:
            notes.append(text)
        return None
    folder = repo_folder(Path(plan.stack.host_path(hf)), svc.model)
    return PullTarget(f"hf-cache:{svc.model}", folder, source, (name,), False, cache=True)


def _describe(source: PullSource) -> str:
    return f"{source.hub}:{source.repo}@{source.revision}"


def describe(source: PullSource) -> str:
    """``huggingface:org/name@main``: how the kit names a source in messages."""
    return _describe(source)


def endpoint(plan: Plan, hub: str) -> str:
    """The hub's endpoint: the stack's mirror (``defaults.hf_endpoint``), else ``HF_ENDPOINT``,
    else the public hub; for ModelScope ``defaults.modelscope_endpoint``, else
    ``MODELSCOPE_ENDPOINT`` (or the older ``MODELSCOPE_DOMAIN``), else modelscope.cn."""
    import os

    d = plan.stack.defaults
    if hub == "modelscope":
        given = (
            d.modelscope_endpoint
            or os.environ.get("MODELSCOPE_ENDPOINT")
            or os.environ.get("MODELSCOPE_DOMAIN")
        )
        if given and "://" not in given:  # MODELSCOPE_DOMAIN is a bare host name
            given = f"https://{given}"
        return (given or HUBS[hub]).rstrip("/")
    return (d.hf_endpoint or os.environ.get("HF_ENDPOINT") or HUBS[hub]).rstrip("/")


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
