"""A local DOUBLE of ModelScope's HTTP API, for tests (no model hub is reachable here).

It serves, from the same kind of model files as tests/hubdouble.py (a dict of bytes or a folder
of real files), the ``/api/v1`` endpoints the real ``modelscope_hub`` client (the engine of the
``modelscope`` package since 1.38) calls to pull a model, with the JSON envelope it unwraps
(``{"Code": 200, "Data": ..., "Success": true}``):

- ``GET /api/v1/models/{owner}/{name}/revisions``: ``RevisionMap`` with ``Branches`` and
  ``Tags`` (``Revision``, ``CreatedAt``);
- ``GET /api/v1/models/{owner}/{name}/repo/files?Revision=R&Recursive=True``: ``Files`` with
  ``Path``, ``Name``, ``Type``, ``Size``, ``Sha256``, ``IsLFS`` and ``Revision`` (the commit);
- ``GET /api/v1/models/{owner}/{name}/repo?Revision=R&FilePath=P``: the file, with
  ``Range: bytes=N-`` (206 + ``Content-Range``) for resumed downloads;
- errors as ModelScope gives them: 404 with a ``Code``/``Message`` body; 401 for a private
  repository without its token (``Authorization: Bearer`` or the ``m_session_id`` cookie).

``R`` is a branch, a tag or a commit. Every body byte served is counted per file and every
request recorded (never a token); damaged bytes can be injected. Adding files to a repository
again makes a new commit on ``master`` (tests move a branch forward).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

CHUNK = 1024 * 1024


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]
    created: int


@dataclass
class Repo:
    commits: list[Commit] = field(default_factory=list)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    token: str | None = None

    def resolve(self, rev: str) -> Commit | None:
        sha = self.branches.get(rev) or self.tags.get(rev) or rev
        return next((c for c in self.commits if c.sha == sha), None)


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    auth: bool


class ModelScopeDouble:
    """The double's state and its HTTP server (``with ModelScopeDouble(port=...) as ms:``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self._served: dict[str, int] = {}
        self._corrupt: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add_repo(self, repo_id: str, files: Path | dict[str, bytes], *,
                 token: str | None = None, tag: str | None = None) -> str:  # fmt: skip
        """A new commit on ``master`` with these files (a folder is read now). Returns it."""
        if isinstance(files, Path):
            files = {
                p.relative_to(files).as_posix(): p.read_bytes()
                for p in sorted(files.rglob("*"))
                if p.is_file() and not any(s.startswith(".") for s in p.relative_to(files).parts)
            }
        repo = self.repos.setdefault(repo_id, Repo())
        repo.token = token or repo.token
        parent = repo.commits[-1].sha if repo.commits else ""
        listing = [
            parent,
            repo_id,
            sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items()),
        ]
        sha = hashlib.sha1(json.dumps(listing).encode(), usedforsecurity=False).hexdigest()
        repo.commits.append(Commit(sha, dict(files), int(time.time())))
        repo.branches["master"] = sha
        if tag:
            repo.tags[tag] = sha
        return sha

    def corrupt(self, path: str, times: int = 1) -> None:
        """The next ``times`` bodies of ``path`` arrive with one byte flipped."""
        self._corrupt[path] = times

    def served_bytes(self, path: str | None = None) -> int:
        with self._lock:
            return self._served.get(path, 0) if path else sum(self._served.values())

    def reset_counts(self) -> None:
        with self._lock:
            self._served.clear()
            self.requests.clear()

    def __enter__(self) -> ModelScopeDouble:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _count(self, path: str, n: int) -> None:
        with self._lock:
            self._served[path] = self._served.get(path, 0) + n


def _handler(double: ModelScopeDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            path = unquote(url.path)
            token = self._token()
            double.requests.append(
                Request("GET", path, self.headers.get("Range"), token is not None)
            )
            parts = path.removeprefix("/api/v1/models/").split("/")
            if not path.startswith("/api/v1/models/") or len(parts) < 3:
                return self._error(404, "no such endpoint")
            repo_id, rest = "/".join(parts[:2]), "/".join(parts[2:])
            repo = double.repos.get(repo_id)
            if repo is None:
                return self._error(404, f"model {repo_id} not found")
            if repo.token is not None and token != repo.token:
                return self._error(401, "private model: log in with an access token")
            if rest == "revisions":

                def revs(names: dict[str, str]) -> list[dict]:  # fmt: skip
                    return [{"Revision": n, "CreatedAt": 0} for n in sorted(names)]

                data = {"RevisionMap": {"Branches": revs(repo.branches), "Tags": revs(repo.tags)}}
                return self._json(200, data)
            commit = repo.resolve(query.get("Revision", "master"))
            if commit is None:
                return self._error(404, f"revision {query.get('Revision')} not found")
            if rest == "repo/files":
                files = [
                    {"Name": p.rsplit("/", 1)[-1], "Path": p, "Type": "blob", "Size": len(b),
                     "Sha256": hashlib.sha256(b).hexdigest(), "IsLFS": p.endswith(".safetensors"),
                     "Revision": commit.sha, "CommittedDate": commit.created}
                    for p, b in sorted(commit.files.items())
                ]  # fmt: skip
                return self._json(200, {"Files": files})
            if rest == "repo":
                name = query.get("FilePath", "")
                if name not in commit.files:
                    return self._error(404, f"file {name} not found")
                return self._file(name, commit.files[name])
            return self._error(404, "no such endpoint")

        def _token(self) -> str | None:
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                return auth[7:]
            for part in (self.headers.get("Cookie") or "").split(";"):
                key, _, value = part.strip().partition("=")
                if key == "m_session_id":
                    return value
            return None

        def _json(self, status: int, data: object) -> None:
            body = json.dumps({"Code": status, "Data": data, "Success": status < 400}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str) -> None:
            body = json.dumps({"Code": status, "Message": message, "Success": False}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _file(self, name: str, data: bytes) -> None:
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[6:-1])
            if start > len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start:]
            if body and double._corrupt.get(name, 0) > 0:
                double._corrupt[name] -= 1
                body = bytes([body[0] ^ 0xFF]) + body[1:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            for i in range(0, len(body), CHUNK):
                self.wfile.write(body[i : i + CHUNK])
                double._count(name, len(body[i : i + CHUNK]))

    return Handler
