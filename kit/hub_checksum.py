"""Checksums the hubs publish, computed on local bytes.

Hugging Face names every file by its git object id (sha1 over ``blob <size>\\0`` + content) and
every LFS file (weights) also by the sha256 of its content; ModelScope publishes sha256 for
every file. :class:`HashingWriter` computes the digest while a download writes, so a finished
file is verified without reading it back; a resumed download hashes its partial bytes once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class Expected:
    """What a file must be: its size and at least one digest."""

    size: int
    sha256: str | None = None
    #: git blob sha1 (Hugging Face's id for files kept in git, and its ETag for them)
    git_oid: str | None = None

    def __post_init__(self) -> None:
        if self.sha256 is None and self.git_oid is None:
            raise ValueError("a file needs a sha256 or a git object id to be verified")

    @property
    def algorithm(self) -> str:
        return "sha256" if self.sha256 else "git-sha1"

    @property
    def digest(self) -> str:
        return self.sha256 or self.git_oid or ""


class Digest:
    """The hash :class:`Expected` asks for, fed incrementally."""

    def __init__(self, expected: Expected) -> None:
        self.expected = expected
        self._h = self._fresh()

    def _fresh(self):  # type: ignore[no-untyped-def]
        if self.expected.sha256:
            return hashlib.sha256()
        h = hashlib.sha1(usedforsecurity=False)
        h.update(f"blob {self.expected.size}\0".encode())
        return h

    def reset(self) -> None:
        self._h = self._fresh()

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()

    def matches(self) -> bool:
        return self.hexdigest() == self.expected.digest


def file_digest(path: Path, expected: Expected) -> str:
    """The digest of a local file in the form ``expected`` asks for."""
    d = Digest(expected)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            d.update(chunk)
    return d.hexdigest()


def verify_file(path: Path, expected: Expected) -> bool:
    """True when ``path`` has the expected size and digest."""
    try:
        if path.stat().st_size != expected.size:
            return False
    except OSError:
        return False
    return file_digest(path, expected) == expected.digest


class HashingWriter:
    """A binary file wrapper that hashes what is written and reports progress.

    Handed to the hub client's download function: it writes chunks, and may rewind and truncate
    when a server ignores a Range request (then the hash restarts from the file's start)."""

    def __init__(self, f: BinaryIO, digest: Digest, on_bytes=None) -> None:  # type: ignore[no-untyped-def]
        self._f = f
        self.digest = digest
        self._on_bytes = on_bytes
        self.written = 0

    def prime(self) -> int:
        """Hash the bytes already in the file (a resumed download); returns their count."""
        self._f.seek(0)
        n = 0
        while chunk := self._f.read(CHUNK):
            self.digest.update(chunk)
            n += len(chunk)
        self._f.seek(n)
        return n

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.written += len(data)
        if self._on_bytes is not None:
            self._on_bytes(len(data))
        return self._f.write(data)

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._f.seek(pos, whence)

    def truncate(self, size: int | None = None) -> int:
        n = self._f.truncate(size)
        # the server ignored the Range request: the file restarts at its current position
        self.digest.reset()
        self._f.seek(0)
        while chunk := self._f.read(CHUNK):
            self.digest.update(chunk)
        return n

    def flush(self) -> None:
        self._f.flush()
