"""The hubs the kit pulls from, behind one small interface, driven by their own client library.

:class:`HuggingFaceHub` uses ``huggingface_hub``: ``HfApi.model_info`` (``GET
/api/models/{id}/revision/{rev}?blobs=true``: the commit a revision resolves to and every file
with its size, git object id and LFS sha256), ``get_hf_file_metadata`` (``HEAD
/{id}/resolve/{commit}/{file}``: ``X-Repo-Commit``, ``ETag``/``X-Linked-Etag``,
``X-Linked-Size`` and the redirect to the storage host) and ``http_get`` (the download with its
retries, resumed with a ``Range`` request from the bytes already on disk). No hand-written
HTTP. The stack's ``hf_endpoint`` mirror is the client's endpoint.

Errors come back as :class:`HubError` with what to change; a token never appears in them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from kit.errors import KitError
from kit.hub_checksum import Expected
from kit.hub_token import Token, token_hint


@dataclass(frozen=True)
class RemoteFile:
    path: str
    expected: Expected
    #: kept in git LFS (weights): Hugging Face serves it from a storage host
    lfs: bool = False

    @property
    def size(self) -> int:
        return self.expected.size


@dataclass(frozen=True)
class Snapshot:
    """A repository at one commit: what a revision resolved to."""

    repo: str
    revision: str
    commit: str
    files: tuple[RemoteFile, ...]
    gated: bool = False

    def file(self, path: str) -> RemoteFile:
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(path)


class HubError(KitError):
    """The hub refused or failed a request; the message says what to change."""


class HubAccessError(HubError):
    """401/403: a gated or private repository without a usable token."""


class HubClient(Protocol):
    hub: str
    endpoint: str

    def resolve(self, repo: str, revision: str) -> Snapshot: ...

    def download(
        self,
        snapshot: Snapshot,
        file: RemoteFile,
        out: BinaryIO,
        *,
        offset: int,
    ) -> None:
        """Write ``file``'s bytes from ``offset`` on to ``out`` (positioned at ``offset``)."""
        ...


class HuggingFaceHub:
    """The Hugging Face Hub (or a mirror of its API) through ``huggingface_hub``."""

    hub = "huggingface"

    def __init__(self, endpoint: str, token: Token) -> None:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()  # the kit draws its own, per file and overall
        # the library logs each retry with the URL (never the token); keep them off the console
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
        self.endpoint = endpoint.rstrip("/")
        self._token = token

    @property
    def _auth(self) -> str | bool:
        return self._token.value or False  # False: never fall back to a token saved elsewhere

    def resolve(self, repo: str, revision: str) -> Snapshot:
        from huggingface_hub import HfApi

        api = HfApi(endpoint=self.endpoint, token=self._auth)
        try:
            info = api.model_info(repo, revision=revision, files_metadata=True)
        except Exception as exc:
            raise self._error(exc, repo, revision) from None
        if not info.sha:
            raise HubError(f"{self.endpoint} gave no commit for {repo}@{revision}")
        files = []
        for s in info.siblings or []:
            if s.size is None:
                raise HubError(
                    f"{self.endpoint} gave no size for {repo}/{s.rfilename}: the endpoint does not "
                    "serve the hub's file metadata (blobs=true); check defaults.hf_endpoint"
                )
            lfs = s.lfs is not None
            sha = s.lfs.sha256 if s.lfs is not None else None
            files.append(
                RemoteFile(s.rfilename, Expected(s.size, sha256=sha, git_oid=s.blob_id), lfs)
            )
        return Snapshot(repo, revision, info.sha, tuple(files), gated=bool(info.gated))

    def download(self, snapshot: Snapshot, file: RemoteFile, out: BinaryIO, *, offset: int) -> None:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers

        url = hf_hub_url(snapshot.repo, file.path, revision=snapshot.commit, endpoint=self.endpoint)
        try:
            meta = get_hf_file_metadata(url, token=self._auth, endpoint=self.endpoint,
                                        retry_on_errors=True)  # fmt: skip
            if meta.commit_hash and meta.commit_hash != snapshot.commit:
                raise HubError(
                    f"{self.endpoint} served {snapshot.repo}/{file.path} from commit "
                    f"{meta.commit_hash}, not the pinned {snapshot.commit}"
                )
            etag = (meta.etag or "").lower()
            if etag and etag != file.expected.digest and etag != (file.expected.git_oid or ""):
                raise ChecksumMismatch(
                    f"{snapshot.repo}/{file.path}: the hub's ETag {etag} is not the checksum "
                    f"its file list gives ({file.expected.digest})"
                )
            if meta.size is not None and meta.size != file.size:
                raise HubError(
                    f"{snapshot.repo}/{file.path}: the hub says {meta.size} bytes in one place "
                    f"and {file.size} in another"
                )
            headers = build_hf_headers(token=self._auth)
            if _origin(meta.location) != _origin(url):
                headers.pop("authorization", None)  # never send the token to a storage host
        except HubError:
            raise
        except Exception as exc:
            raise self._error(exc, snapshot.repo, snapshot.revision, file.path) from None
        try:
            http_get(meta.location, out, resume_size=offset, headers=headers,
                     expected_size=file.size, displayed_filename=file.path)  # fmt: skip
        except Exception as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status is None and (
                isinstance(exc, OSError) or type(exc).__module__.startswith("httpx")
            ):
                # a dropped connection after the library's own retries, or a short body: the
                # bytes so far stay in the partial file and the next try resumes from there
                raise TransferError(
                    f"{snapshot.repo}/{file.path}: transfer broke off: {type(exc).__name__}: "
                    f"{_first_line(exc)}"
                ) from None
            raise self._error(exc, snapshot.repo, snapshot.revision, file.path) from None

    def _error(self, exc: Exception, repo: str, revision: str, path: str | None = None) -> KitError:
        from huggingface_hub import errors as hf

        what = f"{repo}/{path}" if path else repo
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(exc, hf.GatedRepoError) or status in (401, 403):
            return access_error(self.hub, self.endpoint, repo, status, self._token,
                                gated=isinstance(exc, hf.GatedRepoError))  # fmt: skip
        if isinstance(exc, hf.RevisionNotFoundError):
            return HubError(
                f"{repo} has no revision {revision!r} on {self.endpoint}",
                hint="fix pull.revision (a branch, tag or commit of the repository)",
            )
        if isinstance(exc, hf.RepositoryNotFoundError) or status == 404:
            return HubError(
                f"{what} not found on {self.endpoint}",
                hint="check the service's pull: repo id (and defaults.hf_endpoint)",
            )
        if isinstance(exc, OSError | ConnectionError) or type(exc).__module__.startswith("httpx"):
            return HubError(
                f"cannot reach {self.endpoint} for {what}: {type(exc).__name__}: "
                f"{_first_line(exc)}",
                hint="check the network and defaults.hf_endpoint; run kit pull again to resume",
            )
        return HubError(
            f"{self.endpoint} failed for {what}: {type(exc).__name__}: {_first_line(exc)}"
        )


class ChecksumMismatch(HubError):
    """Bytes that are not what the hub's checksum says."""


class TransferError(HubError):
    """A download broke off; what arrived is kept for the next try."""


def access_error(hub: str, endpoint: str, repo: str, status: int | None, tok: Token,
                 *, gated: bool) -> HubAccessError:  # fmt: skip
    """401/403 from a hub: which file and variable to set; the token itself is never shown."""
    kind = "gated" if gated else "gated or private"
    code = f"HTTP {status}" if status else "access refused"
    if tok.value is None:
        return HubAccessError(
            f"{repo} on {endpoint} is {kind} ({code}) and the kit has no {hub} token: "
            f"{tok.variable} is not set in {tok.file or 'an env file (the stack names none)'}",
            hint=f"{token_hint(tok)}, after accepting the model's terms at {endpoint}/{repo}",
        )
    return HubAccessError(
        f"{repo} on {endpoint} is {kind} ({code}): the token in {tok.variable} from "
        f"{tok.file} has no access to it",
        hint=f"accept the model's terms at {endpoint}/{repo} with that account, or put "
        f"another token in {tok.variable} in {tok.file}",
    )


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    u = urlsplit(url)
    return f"{u.scheme}://{u.netloc}"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


#: called with the number of bytes a download wrote (progress)
OnBytes = Callable[[int], None]
