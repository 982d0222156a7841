"""The output side of a batch and resuming it: what an existing OUTPUT holds (done, failed
for good, to redo), rewriting it to the lines kept, appending whole lines, the invalid-lines
file, and the lock that keeps two runs off one OUTPUT.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.batch.input import InvalidLine
from kit.batch.results import is_retryable_line
from kit.errors import KitError


def errors_path_for(output: Path) -> Path:
    """Where invalid input lines go: ``out.jsonl`` -> ``out.errors.jsonl``."""
    stem = output.stem if output.suffix == ".jsonl" else output.name
    return output.with_name(f"{stem}.errors.jsonl")


_SUCCESS, _SETTLED_FAILURE, _REDO = 2, 1, 0


@dataclass
class ResumeState:
    """What an existing OUTPUT already holds."""

    succeeded: set[str] = field(default_factory=set)
    #: failures kept as final (4xx answers), not retried unless ``retry_failed``
    failed: set[str] = field(default_factory=set)
    lines: int = 0
    #: OUTPUT line numbers (0-based) to keep when the file must be rewritten; None: keep all
    keep: list[int] | None = None
    dropped_redo: int = 0
    dropped_duplicates: int = 0
    dropped_truncated: bool = False
    #: (size, mtime) of OUTPUT when read; None: it did not exist
    stamp: tuple[int, int] | None = None


def file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def _output_problem(path: Path, line: int, what: str) -> KitError:
    return KitError(
        f"{path} line {line} {what}, so it is not an output of kit batch",
        hint="choose another -o OUTPUT, or remove the file to start over",
    )


def _rank(obj: dict[str, Any], retry_failed: bool) -> int:
    if obj.get("error") is None and isinstance(obj.get("response"), dict):
        return _SUCCESS
    if retry_failed or is_retryable_line(obj):
        return _REDO
    return _SETTLED_FAILURE


def read_output(path: Path, *, retry_failed: bool = False) -> ResumeState:
    """Classify an existing OUTPUT's lines; decide which to keep. Reads only."""
    state = ResumeState(stamp=file_stamp(path))
    if state.stamp is None:
        return state
    best: dict[str, tuple[int, int]] = {}  # custom_id -> (rank, line index)
    complete = blank = 0
    with path.open("rb") as f:
        for idx, raw in enumerate(f):
            if not raw.endswith(b"\n"):
                state.dropped_truncated = True  # cut off mid-write: redone
                break
            complete += 1
            if not raw.strip():
                blank += 1
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise _output_problem(path, idx + 1, "is not JSON") from None
            cid = obj.get("custom_id") if isinstance(obj, dict) else None
            if not isinstance(cid, str):
                raise _output_problem(path, idx + 1, "has no custom_id")
            rank = _rank(obj, retry_failed)
            if cid not in best or rank > best[cid][0]:
                best[cid] = (rank, idx)
    state.lines = complete
    for cid, (rank, _) in best.items():
        if rank == _SUCCESS:
            state.succeeded.add(cid)
        elif rank == _SETTLED_FAILURE:
            state.failed.add(cid)
        else:
            state.dropped_redo += 1
    keep = sorted(idx for rank, idx in best.values() if rank != _REDO)
    state.dropped_duplicates = complete - blank - len(keep) - state.dropped_redo
    if len(keep) != complete or state.dropped_truncated:
        state.keep = keep
    return state


def rewrite_output(path: Path, keep: list[int]) -> None:
    """Keep only the lines ``keep`` of ``path``: a new file, swapped in atomically."""
    wanted = set(keep)
    tmp = path.with_name(f".{path.name}.tmp")
    with path.open("rb") as src, tmp.open("wb") as dst:
        for idx, raw in enumerate(src):
            if idx in wanted:
                dst.write(raw)
        dst.flush()
        os.fsync(dst.fileno())
    tmp.replace(path)


def write_errors_file(path: Path, invalid: list[InvalidLine]) -> None:
    """Invalid input lines, rewritten on every run (removed when there are none)."""
    if not invalid:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f".{path.name}.tmp")
    text = "".join(json.dumps(i.to_json(), ensure_ascii=False) + "\n" for i in invalid)
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


class OutputWriter:
    """Appends one result line per ``write`` call (O_APPEND, unbuffered): never half a line,
    short of the process being killed mid-call (a truncated last line is redone on resume)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, obj: dict[str, Any]) -> None:
        data = memoryview((json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8"))
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError as exc:
            raise KitError(f"cannot write {self.path}: {exc.strerror}") from None

    def close(self) -> None:
        os.close(self.fd)


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """One ``kit batch`` per OUTPUT at a time (two would write every line twice)."""
    lock = output.with_name(f".{output.name}.lock")
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise KitError(
            f"another kit batch is writing {output}",
            hint="wait for it to finish (or stop it), or choose another -o OUTPUT",
        ) from None
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)
