"""ModelScope behind the kit's hub interface (:class:`kit.hub_client.HubClient`), with the hub's
own client: ``modelscope_hub`` (the engine of the ``modelscope`` package since 1.38; no torch).

- revisions: ``HubApi.list_repo_revisions`` (branches and tags);
- files: ``HubApi.list_repo_files`` (path, size and the sha256 of every file);
- bytes: ``HubApi.legacy.download_stream`` with a ``Range`` header from the bytes already on
  disk, streamed into the kit's verifying writer (:mod:`kit.pull` stages, checks and installs).

The client names no commit for a branch (its cache is keyed by revision name), so the kit pins
a ModelScope snapshot by its content: ``ms-`` + the sha1 of every file's path and sha256. The
lock then holds that id and every checksum; a later pull that finds other files behind the
revision refuses (the old ones cannot be asked for) instead of fetching different bytes.
A tag or commit in ``pull.revision`` is what makes a ModelScope pull reproducible after the
branch moves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import BinaryIO

from kit.errors import KitError
from kit.hub_checksum import Expected
from kit.hub_client import HubError, RemoteFile, Snapshot, TransferError, access_error
from kit.hub_token import Token

REPO_TYPE = "model"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
CHUNK = 1024 * 1024


def content_id(files: tuple[RemoteFile, ...]) -> str:
    """The kit's id of a ModelScope snapshot: its files' paths and sha256s."""
    listing = sorted((f.path, f.expected.digest) for f in files)
    return "ms-" + hashlib.sha1(json.dumps(listing).encode(), usedforsecurity=False).hexdigest()


class ModelScopeHub:
    hub = "modelscope"
    #: the lock's id is the snapshot's content, not a commit the hub can serve again
    pins_commits = False

    def __init__(self, endpoint: str, token: Token) -> None:
        logging.getLogger("modelscope_hub").setLevel(logging.ERROR)  # URLs, retries: not ours
        self.endpoint = endpoint.rstrip("/")
        self._token = token

    def _api(self):  # type: ignore[no-untyped-def]
        from modelscope_hub import HubApi

        return HubApi(endpoint=self.endpoint, token=self._token.value or "")

    def resolve(self, repo: str, revision: str) -> Snapshot:
        api = self._api()
        try:
            if not _COMMIT.match(revision):
                names = {str(r.get("Revision")) for r in api.list_repo_revisions(repo, REPO_TYPE)}
                if revision not in names:
                    raise HubError(
                        f"{repo} has no revision {revision!r} on {self.endpoint} (it has: "
                        f"{', '.join(sorted(names)) or 'none'})",
                        hint="fix pull.revision (a branch, tag or commit; ModelScope's default "
                        "branch is master)",
                    )
            listing = api.list_repo_files(repo, REPO_TYPE, revision=revision, recursive=True)
        except HubError:
            raise
        except Exception as exc:
            raise self._error(exc, repo) from None
        files = []
        for f in listing:
            if f.type != "blob":
                continue
            if not f.sha256:
                raise HubError(
                    f"{self.endpoint} gave no sha256 for {repo}/{f.path}, so the kit cannot "
                    "verify it",
                    hint="point defaults.modelscope_endpoint at ModelScope's API (or a mirror "
                    "that lists each file's sha256)",
                )
            files.append(RemoteFile(f.path, Expected(f.size, sha256=f.sha256.lower()), f.is_lfs))
        snap = tuple(files)
        commit = revision if _COMMIT.match(revision) else content_id(snap)
        return Snapshot(repo, revision, commit, snap)

    def download(self, snapshot: Snapshot, file: RemoteFile, out: BinaryIO, *, offset: int) -> None:
        api = self._api()
        rev = snapshot.commit if _COMMIT.match(snapshot.commit) else snapshot.revision
        headers = {"Range": f"bytes={offset}-"} if offset else None
        try:
            resp = api.legacy.download_stream(snapshot.repo, REPO_TYPE, file.path, revision=rev,
                                              headers=headers)  # fmt: skip
        except Exception as exc:
            raise self._error(exc, snapshot.repo, file.path) from None
        skip = offset if offset and resp.status_code == 200 else 0  # the Range was not honoured
        try:
            with resp:
                for chunk in resp.iter_content(CHUNK):
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                    if chunk:
                        out.write(chunk)
        except OSError as exc:  # requests' connection errors are OSErrors
            raise TransferError(
                f"{snapshot.repo}/{file.path}: transfer broke off: {type(exc).__name__}"
            ) from None
        except Exception as exc:
            if type(exc).__module__.startswith(("requests", "urllib3")):
                raise TransferError(
                    f"{snapshot.repo}/{file.path}: transfer broke off: {type(exc).__name__}"
                ) from None
            raise

    def _error(self, exc: Exception, repo: str, path: str | None = None) -> KitError:
        what = f"{repo}/{path}" if path else repo
        status = getattr(exc, "status_code", None)
        if status in (401, 403):
            return access_error(self.hub, self.endpoint, repo, status, self._token, gated=False)
        if status == 404:
            return HubError(
                f"{what} not found on {self.endpoint}",
                hint="check the service's pull: repo id (and defaults.modelscope_endpoint)",
            )
        first = str(exc).splitlines()[0] if str(exc) else ""
        return HubError(
            f"{self.endpoint} failed for {what}: {type(exc).__name__}: {first}",
            hint="check the network and defaults.modelscope_endpoint; run kit pull again",
        )
