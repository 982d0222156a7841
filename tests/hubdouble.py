"""A local DOUBLE of the Hugging Face Hub's HTTP API, for tests (no hub is reachable here).

It serves, from folders of real files, the endpoints the real ``huggingface_hub`` client uses
to pull a model, with the headers it reads:

- ``GET /api/models/{org}/{name}/revision/{rev}[?blobs=true]``: the commit a branch, tag or
  commit resolves to (``sha``), ``gated``, and ``siblings`` with ``size``, ``blobId`` (git object
  id) and ``lfs`` (``sha256``, ``size``, ``pointerSize``) for LFS files;
- ``GET /api/models/{org}/{name}/tree/{rev}[?recursive=true]``: the file tree;
- ``HEAD``/``GET /{org}/{name}/resolve/{rev}/{path}``: files kept in git answer 200 with
  ``ETag`` (git object id), ``X-Repo-Commit`` and ``Content-Length``; LFS files (weights) answer
  302 to a second "storage" origin, with ``X-Linked-Etag`` (sha256), ``X-Linked-Size`` and
  ``X-Repo-Commit``, as the hub redirects to its CDN;
- ``Range: bytes=N-`` on every file (206 + ``Content-Range``), for resumed downloads;
- errors with the hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
  ``EntryNotFound``, ``GatedRepo``: 401 without a token, 403 with one that has no access).

Every body byte served is counted per file, every request recorded (method, path, Range, whether
it carried a token: never the token), and faults can be injected: damaged bytes once, a
connection dropped after N bytes once, a rate limit. Adding files to a repository again makes a
new commit on ``main``: tests move a branch forward.

Run by hand: ``python tests/hubdouble.py --port 19100 --repo org/name=/path/to/folder``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".model",
    ".onnx",
    ".gguf",
    ".h5",
    ".msgpack",
)
LFS_MIN_SIZE = 10 * 1024 * 1024
CHUNK = 1024 * 1024


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class HubFile:
    path: str
    size: int
    sha256: str
    oid: str  # git object id of the content, or of the LFS pointer
    lfs: bool
    pointer_size: int = 0
    data: bytes | None = None
    source: Path | None = None

    def read(self, start: int, end: int):  # type: ignore[no-untyped-def]
        """Yield the bytes [start, end) in chunks."""
        if self.data is not None:
            for i in range(start, end, CHUNK):
                yield self.data[i : min(end, i + CHUNK)]
            return
        assert self.source is not None
        with self.source.open("rb") as f:
            f.seek(start)
            left = end - start
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk


def make_file(path: str, *, data: bytes | None = None, source: Path | None = None) -> HubFile:
    if data is None:
        assert source is not None
        h = hashlib.sha256()
        content_sha1 = hashlib.sha1(usedforsecurity=False)
        size = source.stat().st_size
        content_sha1.update(b"blob %d\0" % size)
        with source.open("rb") as f:
            while chunk := f.read(8 * CHUNK):
                h.update(chunk)
                content_sha1.update(chunk)
        sha256, blob = h.hexdigest(), content_sha1.hexdigest()
    else:
        size, sha256, blob = len(data), hashlib.sha256(data).hexdigest(), git_oid(data)
    lfs = path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE
    if lfs:
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
        return HubFile(
            path, size, sha256, git_oid(pointer.encode()), True, len(pointer), data, source
        )
    return HubFile(path, size, sha256, blob, False, 0, data, source)


@dataclass
class Commit:
    sha: str
    files: dict[str, HubFile]
    date: str


@dataclass
class Repo:
    repo_id: str
    commits: list[Commit] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    gated: bool = False
    tokens: frozenset[str] = frozenset()

    def resolve(self, rev: str) -> Commit | None:
        if rev == "main" and self.commits:
            return self.commits[-1]
        sha = self.tags.get(rev, rev)
        for c in self.commits:
            if c.sha == sha:
                return c
        return None


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    authorized: bool
    status: int


class HubDouble:
    """The double: a hub origin and a storage origin, each a threaded HTTP server."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, storage_port: int = 0) -> None:
        self.host = host
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, HubFile] = {}
        self.requests: list[Request] = []
        self.served: dict[str, int] = {}
        self.rate: float | None = None  # body bytes per second, all files
        self._corrupt: dict[str, int] = {}
        self._drop: dict[str, int] = {}
        self._lock = threading.Lock()
        self._hub = ThreadingHTTPServer((host, port), _handler(self, storage=False))
        self._storage = ThreadingHTTPServer((host, storage_port), _handler(self, storage=True))
        for srv in (self._hub, self._storage):
            srv.daemon_threads = True
        self._threads: list[threading.Thread] = []

    # --- setup -----------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self._hub.server_address[1]}"

    @property
    def storage(self) -> str:
        return f"http://{self.host}:{self._storage.server_address[1]}"

    def add_repo(self, repo_id: str, files: Path | dict[str, bytes], *, gated: bool = False,
                 tokens: tuple[str, ...] = (), tag: str | None = None) -> str:  # fmt: skip
        """Add a commit to ``repo_id`` (creating it) with these files; ``main`` points to it.
        A folder is read lazily (its checksums are computed now). Returns the commit."""
        if isinstance(files, Path):
            entries = {
                str(p.relative_to(files)): make_file(str(p.relative_to(files)), source=p)
                for p in sorted(files.rglob("*"))
                if p.is_file() and not any(part.startswith(".") and part != ".gitattributes"
                                           for part in p.relative_to(files).parts)
            }  # fmt: skip
        else:
            entries = {k: make_file(k, data=v) for k, v in files.items()}
        repo = self.repos.setdefault(repo_id, Repo(repo_id))
        repo.gated = repo.gated or gated
        repo.tokens = repo.tokens | frozenset(tokens)
        parent = repo.commits[-1].sha if repo.commits else ""
        listing = json.dumps(
            [parent, repo_id, sorted((f.path, f.oid) for f in entries.values())]
        ).encode()
        sha = hashlib.sha1(listing, usedforsecurity=False).hexdigest()
        date = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        repo.commits.append(Commit(sha, entries, date))
        if tag:
            repo.tags[tag] = sha
        for f in entries.values():
            if f.lfs:
                self.blobs[f.sha256] = f
        return sha

    # --- faults ----------------------------------------------------------------------------

    def corrupt(self, path: str, times: int = 1) -> None:
        """The next ``times`` bodies served for a file named ``path`` have one byte changed."""
        with self._lock:
            self._corrupt[path] = times

    def drop_once(self, path: str, after: int) -> None:
        """The next body served for ``path`` stops (the connection closes) after ``after``
        bytes."""
        with self._lock:
            self._drop[path] = after

    def served_bytes(self, path: str | None = None) -> int:
        with self._lock:
            if path is None:
                return sum(self.served.values())
            return self.served.get(path, 0)

    def reset_counts(self) -> None:
        with self._lock:
            self.served.clear()
            self.requests.clear()

    # --- running ---------------------------------------------------------------------------

    def start(self) -> HubDouble:
        for srv in (self._hub, self._storage):
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                 daemon=True)  # fmt: skip
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        for srv in (self._hub, self._storage):
            srv.shutdown()
            srv.server_close()

    def __enter__(self) -> HubDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the API ---------------------------------------------------------------------------

    def _record(self, method: str, path: str, range_: str | None, auth: bool, status: int) -> None:
        with self._lock:
            self.requests.append(Request(method, path, range_, auth, status))

    def model_info(self, repo: Repo, commit: Commit, blobs: bool) -> dict:
        siblings = []
        for f in sorted(commit.files.values(), key=lambda f: f.path):
            s: dict = {"rfilename": f.path}
            if blobs:
                s["size"] = f.size
                s["blobId"] = f.oid
                if f.lfs:
                    s["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
            siblings.append(s)
        return {
            "_id": hashlib.md5(repo.repo_id.encode(), usedforsecurity=False).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.sha,
            "lastModified": commit.date,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "library_name": "transformers",
            "siblings": siblings,
        }

    def tree(self, commit: Commit, prefix: str, recursive: bool) -> list[dict]:
        out: list[dict] = []
        dirs: set[str] = set()
        for f in sorted(commit.files.values(), key=lambda f: f.path):
            if prefix and not f.path.startswith(prefix.rstrip("/") + "/"):
                continue
            rel = f.path[len(prefix.rstrip("/")) + 1 :] if prefix else f.path
            if "/" in rel and not recursive:
                d = (prefix.rstrip("/") + "/" if prefix else "") + rel.split("/")[0]
                if d not in dirs:
                    dirs.add(d)
                    out.append({"type": "directory", "oid": git_oid(d.encode()), "size": 0,
                                "path": d})  # fmt: skip
                continue
            entry: dict = {"type": "file", "oid": f.oid, "size": f.size, "path": f.path}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
            out.append(entry)
        return out


def _handler(double: HubDouble, *, storage: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "hub-double"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self._dispatch(head=True)

        def do_GET(self) -> None:
            self._dispatch(head=False)

        # --- plumbing ----------------------------------------------------------------------

        def _dispatch(self, *, head: bool) -> None:
            url = urlsplit(self.path)
            self._status = 0
            try:
                if storage:
                    self._storage(url.path, head)
                else:
                    self._hub(url.path, parse_qs(url.query), head)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            finally:
                double._record(self.command, url.path, self.headers.get("Range"),
                               bool(self.headers.get("Authorization")), self._status)  # fmt: skip

        def _send(
            self, status: int, headers: dict[str, str], body: bytes = b"", head: bool = False
        ) -> None:
            self._status = status
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head and body:
                self.wfile.write(body)

        def _json(self, status: int, data: object, headers: dict[str, str] | None = None,
                  head: bool = False) -> None:  # fmt: skip
            body = json.dumps(data).encode()
            self._send(status, {"Content-Type": "application/json", **(headers or {})}, body, head)

        def _error(self, status: int, code: str, message: str, head: bool,
                   extra: dict[str, str] | None = None) -> None:  # fmt: skip
            headers = {"X-Error-Code": code, "X-Error-Message": message, **(extra or {})}
            self._json(status, {"error": message}, headers, head)

        # --- hub origin --------------------------------------------------------------------

        def _hub(self, path: str, query: dict[str, list[str]], head: bool) -> None:
            parts = [unquote(p) for p in path.strip("/").split("/")]
            if len(parts) == 4 and parts[0] == "api" and parts[1] == "models":
                parts = [*parts, "revision", "main"]  # no revision: the default branch
            if len(parts) >= 5 and parts[0] == "api" and parts[1] == "models":
                repo_id = f"{parts[2]}/{parts[3]}"
                repo = double.repos.get(repo_id)
                if repo is None:
                    return self._error(404, "RepoNotFound", "Repository not found", head)
                if parts[4] == "revision" and len(parts) >= 6:
                    rev = "/".join(parts[5:])
                    commit = repo.resolve(rev)
                    if commit is None:
                        return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
                    blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
                    return self._json(200, double.model_info(repo, commit, blobs), head=head)
                if parts[4] == "tree" and len(parts) >= 6:
                    commit = repo.resolve(parts[5])
                    if commit is None:
                        return self._error(
                            404, "RevisionNotFound", f"Invalid rev id: {parts[5]}", head
                        )
                    recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                    return self._json(
                        200, double.tree(commit, "/".join(parts[6:]), recursive), head=head
                    )
                return self._error(404, "EntryNotFound", "no such API route", head)
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), head)
            return self._error(404, "EntryNotFound", "not found", head)

        def _resolve(self, repo_id: str, rev: str, file_path: str, head: bool) -> None:
            repo = double.repos.get(repo_id)
            if repo is None:
                return self._error(401, "RepoNotFound", "Repository not found", head)
            if repo.gated:
                auth = self.headers.get("Authorization", "")
                tok = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
                if not tok:
                    return self._error(
                        401, "GatedRepo",
                        f"Access to model {repo_id} is restricted. You must have access to it "
                        "and be authenticated to access it. Please log in.", head,
                    )  # fmt: skip
                if tok not in repo.tokens:
                    return self._error(
                        403, "GatedRepo",
                        f"Access to model {repo_id} is restricted and you are not in the "
                        "authorized list. Visit the model page to ask for access.", head,
                    )  # fmt: skip
            commit = repo.resolve(rev)
            if commit is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
            f = commit.files.get(file_path)
            if f is None:
                return self._error(404, "EntryNotFound", f"{file_path} does not exist", head,
                                   {"X-Repo-Commit": commit.sha})  # fmt: skip
            if f.lfs:
                location = f"{double.storage}/lfs/{f.sha256}?name={quote(f.path)}"
                return self._send(302, {
                    "Location": location,
                    "X-Repo-Commit": commit.sha,
                    "X-Linked-Etag": f'"{f.sha256}"',
                    "X-Linked-Size": str(f.size),
                    "ETag": f'"{f.oid}"',
                }, head=head)  # fmt: skip
            self._body(f, {"ETag": f'"{f.oid}"', "X-Repo-Commit": commit.sha}, head)

        # --- storage origin ----------------------------------------------------------------

        def _storage(self, path: str, head: bool) -> None:
            parts = path.strip("/").split("/")
            f = double.blobs.get(parts[-1]) if len(parts) == 2 and parts[0] == "lfs" else None
            if f is None:
                return self._send(404, {"Content-Type": "text/plain"}, b"NoSuchKey", head)
            self._body(f, {"ETag": f'"{f.sha256}"'}, head)

        def _body(self, f: HubFile, headers: dict[str, str], head: bool) -> None:
            start, end, status = 0, f.size, 200
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                a, _, b = rng[6:].partition("-")
                start = int(a) if a else 0
                end = int(b) + 1 if b else f.size
                if start >= f.size or end > f.size or start >= end:
                    return self._send(416, {"Content-Range": f"bytes */{f.size}"}, head=head)
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{f.size}"
            self._status = status
            self.send_response(status)
            for k, v in {**headers, "Accept-Ranges": "bytes",
                         "Content-Type": "application/octet-stream"}.items():  # fmt: skip
                self.send_header(k, v)
            self.send_header("Content-Length", str(end - start))
            self.end_headers()
            if head:
                return
            with double._lock:
                corrupt = double._corrupt.get(f.path, 0) > 0
                if corrupt:
                    double._corrupt[f.path] -= 1
                drop = double._drop.pop(f.path, None)
            sent = 0
            for chunk in f.read(start, end):
                if corrupt:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                    corrupt = False
                if drop is not None and sent + len(chunk) > drop:
                    chunk = chunk[: drop - sent]
                if double.rate:
                    time.sleep(len(chunk) / double.rate)
                self.wfile.write(chunk)
                sent += len(chunk)
                with double._lock:
                    double.served[f.path] = double.served.get(f.path, 0) + len(chunk)
                if drop is not None and sent >= drop:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return

    return Handler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=19100)
    ap.add_argument("--storage-port", type=int, default=0)
    ap.add_argument("--repo", action="append", default=[], metavar="ORG/NAME=FOLDER")
    ap.add_argument("--gated", action="append", default=[], metavar="ORG/NAME=TOKEN")
    args = ap.parse_args()
    double = HubDouble(args.host, args.port, args.storage_port)
    gated = dict(g.split("=", 1) for g in args.gated)
    for spec in args.repo:
        repo_id, _, folder = spec.partition("=")
        tok = gated.get(repo_id)
        double.add_repo(repo_id, Path(folder), gated=tok is not None, tokens=(tok,) if tok else ())
    double.start()
    print(f"hub double: HF_ENDPOINT={double.endpoint} (storage {double.storage})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        double.stop()


if __name__ == "__main__":
    main()
