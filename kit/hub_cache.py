"""The Hugging Face cache layout, for ``model_source: hub`` services that ``kit pull`` fills.

Such a service's container mounts ``defaults.cache.hf`` as ``HF_HOME``; vLLM (through
``huggingface_hub``) reads a model from ``HF_HOME/hub/models--ORG--NAME/``::

    blobs/<etag>                      the file's bytes, named by the hub's ETag: the sha256 of
                                      an LFS file, the git blob id of any other
    snapshots/<commit>/<path>         a relative symbolic link to ../../blobs/<etag>
    refs/<revision>                   the commit the revision (e.g. main) names

The kit's verified downloader (:mod:`kit.pull`) stages and checks the files as for a model
folder; then it moves them into ``blobs/``, links the snapshot (a new snapshot
folder appears by one rename) and writes ``refs/`` last, so the library never sees a revision
whose files are not all there. With ``HF_HUB_OFFLINE=1`` the library resolves ``main`` through
``refs/main`` to exactly the locked commit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from kit.hub_checksum import verify_file

if TYPE_CHECKING:
    from kit.hub_client import RemoteFile
    from kit.service_plan import ServicePlan
    from kit.spec import Stack

#: the pull's staging folder inside the repository's cache folder (the library ignores it)
STAGING = ".kit-pull"


def repo_folder(hf_home: Path, repo: str) -> Path:
    """``HF_HOME/hub/models--ORG--NAME``: the library's folder for a model repository."""
    return hf_home / "hub" / ("models--" + repo.replace("/", "--"))


def blob(folder: Path, f: RemoteFile) -> Path:
    return folder / "blobs" / f.expected.digest


def snapshot(folder: Path, commit: str) -> Path:
    return folder / "snapshots" / commit


def ref(folder: Path, revision: str) -> str | None:
    """The commit ``refs/<revision>`` names, or None."""
    try:
        return (folder / "refs" / revision).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def good_blobs(folder: Path, files: tuple[RemoteFile, ...], *, verify: bool) -> set[str]:
    """Files whose blob is present: the right size (and, with ``verify``, the right hash)."""
    good = set()
    for f in files:
        b = blob(folder, f)
        try:
            ok = b.stat().st_size == f.size
        except OSError:
            ok = False
        if ok and (not verify or verify_file(b, f.expected)):
            good.add(f.path)
    return good


def linked(folder: Path, commit: str, revision: str, files: tuple[RemoteFile, ...]) -> bool:
    """The snapshot links every file to its blob and the revision names the commit."""
    if revision != commit and ref(folder, revision) != commit:
        return False
    snap = snapshot(folder, commit)
    return all(os.path.realpath(snap / f.path) == os.path.realpath(blob(folder, f)) for f in files)


def present(folder: Path, revision: str) -> bool:
    """The revision names a commit whose snapshot folder exists (``kit up --pull``'s test)."""
    commit = revision if snapshot(folder, revision).is_dir() else ref(folder, revision)
    return commit is not None and snapshot(folder, commit).is_dir()


def pulled_snapshot(stack: Stack, repo: str) -> Path | None:
    """The snapshot ``main`` names in the host's HF cache (``defaults.cache.hf``), if any:
    ``kit plan`` reads a pulled ``model_source: hub`` model's config and weights there."""
    hf = stack.defaults.cache.hf
    if hf is None or repo.count("/") != 1 or ".." in repo:
        return None
    folder = repo_folder(Path(stack.host_path(hf)), repo)
    commit = ref(folder, "main")
    return snapshot(folder, commit) if commit and snapshot(folder, commit).is_dir() else None


def runs_offline(stack: Stack, s: ServicePlan) -> bool:
    """A ``model_source: hub`` service with a ``pull:`` source and a host HF cache: ``kit pull``
    fills the cache, and the container runs with ``HF_HUB_OFFLINE=1`` on exactly that commit."""
    spec = stack.services.get(s.replica_of or s.name)
    return s.model_host_path is None and bool(stack.defaults.cache.hf) and bool(spec and spec.pull)


def missing_offline(stack: Stack, services: list[ServicePlan]) -> list[str]:
    """Services that run offline but whose model is not in the host's HF cache yet."""
    return [
        f"{s.name}: {s.model_arg} (not pulled into the HF cache {stack.defaults.cache.hf})"
        for s in services
        if runs_offline(stack, s) and pulled_snapshot(stack, s.model_arg) is None
    ]
