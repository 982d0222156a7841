"""``kit pull``: put a stack's model folders on this host, verified and pinned.

For every model folder with a ``pull:`` source (:mod:`kit.hub_source`):

1. resolve the source to a commit: the one the lock file beside the stack pins
   (:mod:`kit.hub_lock`), or, the first time and with ``--update``, what the revision names now;
2. choose the files vLLM needs (:mod:`kit.hub_files`);
3. check the free space of each file system against what is still to download, before any byte
   is written;
4. download into a staging folder beside the model folder (``.NAME.kit-pull/``): partial files
   in ``parts/`` grow with Range requests (an interrupted pull resumes where it stopped), each
   file is verified against the hub's checksum (:mod:`kit.hub_checksum`) and only then moved
   to ``files/``; a bad file is fetched again;
5. when every file is verified, ``files/`` becomes the model folder by one rename, so a folder
   that exists is complete. It carries ``.kit-pull.json`` (commit and checksums);
6. record the commit and the files in the lock file.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from kit import hub_cache, hub_files, hub_lock, hub_source
from kit.errors import KitError
from kit.hub_checksum import Digest, HashingWriter, verify_file
from kit.hub_client import (
    ChecksumMismatch,
    HubClient,
    HubError,
    RemoteFile,
    Snapshot,
    TransferError,
    access_error,
)
from kit.hub_clients import client_for
from kit.hub_source import PullTarget, describe

if TYPE_CHECKING:
    from kit.hub_token import Token
    from kit.stack_plan import Plan

MARKER = ".kit-pull.json"
#: the stack field holding each hub's endpoint (named in errors)
_ENDPOINT_FIELD = {"huggingface": "hf_endpoint", "modelscope": "modelscope_endpoint"}
GIB = 1024**3


class PullListener(Protocol):
    """Told what a pull does (from worker threads: implementations lock themselves)."""

    def message(self, text: str) -> None: ...

    def start(self, total_bytes: int, files: int) -> None: ...

    def file_start(self, label: str, size: int, offset: int) -> None: ...

    def advance(self, label: str, n: int) -> None: ...

    def file_done(self, label: str, size: int, downloaded: int, seconds: float) -> None: ...

    def file_retry(self, label: str, why: str) -> None: ...

    def finish(self) -> None: ...


class QuietListener:
    """A listener that shows nothing (library use, tests)."""

    def message(self, text: str) -> None:
        pass

    def start(self, total_bytes: int, files: int) -> None:
        pass

    def file_start(self, label: str, size: int, offset: int) -> None:
        pass

    def advance(self, label: str, n: int) -> None:
        pass

    def file_done(self, label: str, size: int, downloaded: int, seconds: float) -> None:
        pass

    def file_retry(self, label: str, why: str) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass(frozen=True)
class PullOptions:
    #: resolve each revision again and move the lock forward
    update: bool = False
    #: hash every file of folders already present (repairs what does not match)
    verify: bool = False
    #: only fill folders that are missing (``kit up --pull``)
    only_missing: bool = False
    dry_run: bool = False
    workers: int = 4
    #: tries per file when its bytes do not match the checksum
    attempts: int = 3


@dataclass
class FolderPlan:
    """What one model folder needs."""

    target: PullTarget
    snapshot: Snapshot
    files: tuple[RemoteFile, ...]
    selection: hub_files.Selection
    #: "present", "fetch", "update", "repair", "unchecked" (present, not made by the kit)
    action: str
    to_fetch: tuple[RemoteFile, ...] = ()
    #: files of the present folder that are still good for the new snapshot
    reuse: tuple[str, ...] = ()
    #: bytes still to download (partial files already staged are subtracted)
    bytes_needed: int = 0
    lock_note: str = ""

    @property
    def staging(self) -> Path:
        if self.target.cache:
            return self.target.folder / hub_cache.STAGING
        return staging_dir(self.target.folder)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass
class PullResult:
    folders: list[FolderPlan]
    notes: list[str]
    lock_file: Path
    downloaded_bytes: int = 0
    elapsed: float = 0.0
    fetched_files: int = 0
    retried: list[str] = field(default_factory=list)


class DiskSpaceError(KitError):
    """Not enough free space for what a pull still has to download."""


def staging_dir(folder: Path) -> Path:
    """``/models/org/name`` -> ``/models/org/.name.kit-pull`` (same file system: one rename)."""
    return folder.parent / f".{folder.name}.kit-pull"


def disk_free(path: Path) -> int:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    return shutil.disk_usage(_existing(path)).free


def _existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


ClientFactory = Callable[[str, str, "Token"], HubClient]


def prepare(
    plan: Plan,
    services: list[str] | None = None,
    options: PullOptions | None = None,
    *,
    clients: ClientFactory = client_for,
    free_bytes: Callable[[Path], int] = disk_free,
    listener: PullListener | None = None,
) -> PullResult:
    """Resolve every source and decide what each folder needs; checks the disk space. Nothing
    is written."""
    opts = options or PullOptions()
    say = (listener or QuietListener()).message
    targets, notes = hub_source.targets(plan, services)
    lock_file = hub_lock.lock_path(plan.stack.source)
    locked = hub_lock.read(lock_file)
    folders: list[FolderPlan] = []
    for t in targets:
        if opts.only_missing and (
            hub_cache.present(t.folder, t.source.revision) if t.cache else t.folder.is_dir()
        ):
            notes.append(f"{t.key}: present at {t.folder}; left as it is")
            continue
        hub = t.source.hub
        tok = hub_source.token(plan, hub)
        client = clients(hub, hub_source.endpoint(plan, hub), tok)
        prev = locked.get(t.key)
        use_lock = prev is not None and prev.source == t.source and not opts.update
        say(
            f"{t.key}: resolving {describe(t.source)}"
            + (f" at the locked commit {prev.commit[:12]}" if use_lock and prev else "")
            + f" on {client.endpoint}"
        )
        by_commit = use_lock and prev is not None and getattr(client, "pins_commits", True)
        snap = client.resolve(
            t.source.repo, prev.commit if by_commit and prev else t.source.revision
        )
        snap = replace(snap, revision=t.source.revision)
        if use_lock and prev is not None and snap.commit != prev.commit:  # pinned by content
            raise KitError(
                f"{t.key}: {describe(t.source)} now holds other files than the lock pins "
                f"({prev.commit[:15]} -> {snap.commit[:15]}); {hub}'s client names no commit, "
                "so the locked files cannot be asked for again",
                hint="pin a tag or commit in pull.revision, or move the lock with kit pull --update",
            )
        if snap.gated and tok.value is None:
            raise access_error(hub, client.endpoint, t.source.repo, None, tok, gated=True)
        sel = hub_files.select([f.path for f in snap.files], remote_code=t.remote_code)
        if sel.weight_format == "none":
            raise KitError(
                f"{t.key}: {describe(t.source)} has no safetensors or PyTorch weights at its top "
                "level, so vLLM could not load it",
                hint="check the repo id in pull:, or download that model by hand",
            )
        files = tuple(snap.file(p) for p in sel.wanted)
        if use_lock and prev is not None:
            _check_against_lock(t, prev, files)
            lock_note = f"locked commit {snap.commit[:12]}"
        elif prev is None:
            lock_note = f"{t.source.revision} -> {snap.commit[:12]} (new in the lock)"
        elif prev.commit != snap.commit:
            lock_note = (
                f"{t.source.revision} -> {snap.commit[:12]} (lock moves from {prev.commit[:12]})"
            )
        else:
            lock_note = f"{t.source.revision} -> {snap.commit[:12]} (unchanged)"
        folders.append(_assess(t, snap, files, sel, lock_note, opts))
    _check_disk(folders, free_bytes)
    return PullResult(folders, notes, lock_file)


def _check_against_lock(
    t: PullTarget, prev: hub_lock.LockedModel, files: tuple[RemoteFile, ...]
) -> None:
    locked = {f.path: f.expected for f in prev.files}
    for f in files:
        want = locked.get(f.path)
        if want is not None and (want.size, want.digest) != (f.size, f.expected.digest):
            raise ChecksumMismatch(
                f"{t.key}: the hub's {f.path} at the locked commit {prev.commit[:12]} is not the "
                f"file the lock names ({f.expected.digest[:16]}... != {want.digest[:16]}...)",
                hint="the endpoint serves other bytes than the lock: check "
                f"defaults.{_ENDPOINT_FIELD[t.source.hub]}",
            )


def _assess(t: PullTarget, snap: Snapshot, files: tuple[RemoteFile, ...],
            sel: hub_files.Selection, lock_note: str, opts: PullOptions) -> FolderPlan:  # fmt: skip
    fp = FolderPlan(t, snap, files, sel, "fetch", lock_note=lock_note)
    if t.cache:  # blobs are named by their hash: what is there is reused, not fetched again
        good = hub_cache.good_blobs(t.folder, files, verify=opts.verify)
        linked = hub_cache.linked(t.folder, snap.commit, snap.revision, files)
        if len(good) == len(files) and linked:
            fp.action = "present"
            return fp
        fp.reuse = tuple(sorted(good))
        prior = hub_cache.ref(t.folder, snap.revision)
        if prior not in (None, snap.commit):
            fp.action = "update"
        elif good:
            fp.action = "repair"
    elif t.folder.is_dir():
        marker = read_marker(t.folder)
        if marker is None and not opts.verify:
            fp.action = "unchecked"
            return fp
        good = _good_files(t.folder, files, marker, snap.commit, verify=opts.verify)
        if len(good) == len(files) and (marker is None or marker.get("commit") == snap.commit):
            fp.action = "present"
            return fp
        fp.reuse = tuple(sorted(good))
        same_commit = marker is not None and marker.get("commit") == snap.commit
        fp.action = "repair" if same_commit or marker is None else "update"
    elif t.folder.exists():
        raise KitError(f"{t.folder} exists and is not a folder: move it away, then pull again")
    staged = _staged(fp)
    fp.to_fetch = tuple(f for f in files if f.path not in fp.reuse and f.path not in staged)
    fp.bytes_needed = sum(f.size - _part_size(fp, f) for f in fp.to_fetch)
    return fp


def _good_files(folder: Path, files: tuple[RemoteFile, ...], marker: dict | None, commit: str,
                *, verify: bool) -> set[str]:  # fmt: skip
    """Files of a present folder that match: by hashing (``verify``), else by the marker's
    record of what the kit verified when it put them there (and their size now)."""
    recorded = (marker or {}).get("files", {})
    good = set()
    for f in files:
        p = folder / f.path
        if verify:
            if verify_file(p, f.expected):
                good.add(f.path)
        elif recorded.get(f.path) == f.expected.digest and _size(p) == f.size:
            good.add(f.path)
    return good


def _size(p: Path) -> int | None:
    try:
        return p.stat().st_size
    except OSError:
        return None


def read_marker(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _staged(fp: FolderPlan) -> set[str]:
    """Files already verified into the staging folder by an earlier, interrupted pull."""
    state = _read_state(fp.staging)
    if state.get("commit") != fp.snapshot.commit:
        return set()
    files_dir = fp.staging / "files"
    return {f.path for f in fp.files if _size(files_dir / f.path) == f.size}


def _part_size(fp: FolderPlan, f: RemoteFile) -> int:
    if _read_state(fp.staging).get("commit") != fp.snapshot.commit:
        return 0
    n = _size(fp.staging / "parts" / f"{f.path}.part") or 0
    return n if n <= f.size else 0


def _read_state(staging: Path) -> dict:
    try:
        data = json.loads((staging / "state.json").read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _check_disk(folders: list[FolderPlan], free_bytes: Callable[[Path], int]) -> None:
    """Everything still to download against the free space of each file system, before any
    byte is written."""
    by_fs: dict[int, tuple[Path, list[FolderPlan]]] = {}
    for fp in folders:
        if not fp.bytes_needed:
            continue
        where = _existing(fp.staging)
        dev = where.stat().st_dev
        by_fs.setdefault(dev, (where, []))[1].append(fp)
    problems = []
    for where, fps in by_fs.values():
        need = sum(fp.bytes_needed for fp in fps)
        free = free_bytes(where)
        if need > free:
            parts = ", ".join(f"{fp.target.key} {fp.bytes_needed / GIB:.2f} GiB" for fp in fps)
            problems.append(
                f"the pull needs {need / GIB:.2f} GiB ({need} bytes: {parts}) on the file system "
                f"of {where}, which has {free / GIB:.2f} GiB ({free} bytes) free; short by "
                f"{(need - free) / GIB:.2f} GiB"
            )
    if problems:
        raise DiskSpaceError(
            "not enough disk space: " + "; ".join(problems),
            hint="free space there, or point defaults.model_root at a larger disk; nothing "
            "was downloaded",
        )


class _Cancelled(BaseException):
    """Raised inside a download when the pull is interrupted (kept out of ``except Exception``)."""


def run(
    plan: Plan,
    services: list[str] | None = None,
    options: PullOptions | None = None,
    *,
    clients: ClientFactory = client_for,
    free_bytes: Callable[[Path], int] = disk_free,
    listener: PullListener | None = None,
) -> PullResult:
    """Pull the stack's model folders (see the module doc). Returns what was done."""
    opts = options or PullOptions()
    lis = listener or QuietListener()
    started = time.monotonic()
    result = prepare(plan, services, opts, clients=clients, free_bytes=free_bytes, listener=lis)
    if opts.dry_run:
        return result
    lock = hub_lock.read(result.lock_file)
    work = [fp for fp in result.folders if fp.action in ("fetch", "update", "repair")]
    total = sum(fp.bytes_needed for fp in work)
    lis.start(total, sum(len(fp.to_fetch) for fp in work))
    try:
        for fp in result.folders:
            if fp in work:
                got, n = _pull_folder(plan, fp, opts, clients, lis, result)
                result.downloaded_bytes += got
                result.fetched_files += n
            elif (
                fp.action == "present"
                and not fp.target.cache
                and read_marker(fp.target.folder) is None
            ):
                write_marker(fp.target.folder, fp)  # verified by hashing: now the kit's
            lock[fp.target.key] = hub_lock.LockedModel(
                fp.target.source, fp.snapshot.commit, fp.files
            )
            hub_lock.write(result.lock_file, plan.stack.source, lock)
    finally:
        lis.finish()
        result.elapsed = time.monotonic() - started
    return result


def _pull_folder(plan: Plan, fp: FolderPlan, opts: PullOptions, clients: ClientFactory,
                 lis: PullListener, result: PullResult) -> tuple[int, int]:  # fmt: skip
    """Stage, download, verify and move one folder into place. Returns (bytes, files)."""
    hub = fp.target.source.hub
    client = clients(hub, hub_source.endpoint(plan, hub), hub_source.token(plan, hub))
    staging = fp.staging
    if _read_state(staging).get("commit") != fp.snapshot.commit and staging.exists():
        shutil.rmtree(staging)  # staged for another commit: of no use
    files_dir, parts_dir = staging / "files", staging / "parts"
    files_dir.mkdir(parents=True, exist_ok=True)
    parts_dir.mkdir(parents=True, exist_ok=True)
    state = {
        "repo": fp.target.source.repo,
        "commit": fp.snapshot.commit,
        "folder": str(fp.target.folder),
    }
    (staging / "state.json").write_text(json.dumps(state) + "\n", encoding="utf-8")
    for path in () if fp.target.cache else fp.reuse:  # good files: linked, not downloaded
        dst = files_dir / path
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(fp.target.folder / path, dst)
            except OSError:
                shutil.copy2(fp.target.folder / path, dst)
    lis.message(
        f"{fp.target.key}: {fp.action} {len(fp.to_fetch)} of {len(fp.files)} files "
        f"({fp.bytes_needed / GIB:.2f} GiB to download) from {describe(fp.target.source)} "
        f"@ {fp.snapshot.commit[:12]} into {fp.target.folder}"
    )
    cancel = threading.Event()
    downloaded = [0]
    count_lock = threading.Lock()

    def fetch(f: RemoteFile) -> None:
        got = _fetch_file(client, fp, f, files_dir, parts_dir, opts, lis, cancel, result)
        with count_lock:
            downloaded[0] += got

    with ThreadPoolExecutor(max_workers=max(1, opts.workers)) as pool:
        futures: list[Future[None]] = [pool.submit(fetch, f) for f in fp.to_fetch]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for fut in done:
                if fut.exception() is not None:
                    cancel.set()
                    for other in futures:
                        other.cancel()
                    raise fut.exception()  # type: ignore[misc]
        except BaseException:
            cancel.set()
            for other in futures:
                other.cancel()
            raise
    if fp.target.cache:
        _install_in_cache(fp, files_dir)
    else:
        _install(fp, files_dir)
    return downloaded[0], len(fp.to_fetch)


def _fetch_file(client: HubClient, fp: FolderPlan, f: RemoteFile, files_dir: Path,
                parts_dir: Path, opts: PullOptions, lis: PullListener,
                cancel: threading.Event, result: PullResult) -> int:  # fmt: skip
    label = f"{fp.target.key}/{f.path}"
    part = parts_dir / f"{f.path}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    got = 0
    last_error = ""
    for attempt in range(1, opts.attempts + 1):
        if cancel.is_set():
            raise _Cancelled()
        t0 = time.monotonic()
        this = [0]

        def on_bytes(n: int, this: list[int] = this) -> None:
            if cancel.is_set():
                raise _Cancelled()
            this[0] += n
            lis.advance(label, n)

        with part.open("r+b" if part.exists() else "w+b") as fh:
            w = HashingWriter(fh, Digest(f.expected), on_bytes)
            offset = w.prime()
            if offset > f.size:  # not this file's bytes
                fh.truncate(0)
                fh.seek(0)
                w.digest.reset()
                offset = 0
            lis.file_start(label, f.size, offset)
            try:
                if offset < f.size:
                    client.download(fp.snapshot, f, w, offset=offset)  # type: ignore[arg-type]
            except TransferError as exc:
                last_error = str(exc)
                got += this[0]
                lis.file_retry(label, f"{exc.message}; resuming")
                continue
            finally:
                fh.flush()
                os.fsync(fh.fileno())
            got += this[0]
            ok = w.digest.matches() and fh.tell() == f.size
            digest = w.digest.hexdigest()
        if ok:
            dst = files_dir / f.path
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, dst)
            lis.file_done(label, f.size, this[0], time.monotonic() - t0)
            return got
        part.unlink(missing_ok=True)
        last_error = (
            f"{f.expected.algorithm} {digest[:16]}... is not the hub's {f.expected.digest[:16]}..."
        )
        result.retried.append(f.path)
        if attempt < opts.attempts:
            lis.file_retry(label, f"checksum mismatch ({last_error}); fetching it again")
    if last_error.startswith(f"{fp.target.source.repo}/"):  # the transfer kept breaking off
        raise HubError(
            f"{label}: the download broke off {opts.attempts} times: {last_error}",
            hint=f"check the network and defaults.{_ENDPOINT_FIELD[fp.target.source.hub]}; run "
            "kit pull again: it resumes where it stopped",
        )
    raise ChecksumMismatch(
        f"{label}: still wrong after {opts.attempts} downloads from {client.endpoint}: {last_error}",
        hint="the endpoint serves damaged bytes; try again later or another "
        f"defaults.{_ENDPOINT_FIELD[fp.target.source.hub]}",
    )


def write_marker(folder: Path, fp: FolderPlan) -> None:
    """``.kit-pull.json`` in a model folder: the commit and the checksum of every file the kit
    verified there (what later pulls compare against without hashing again)."""
    marker = {
        "hub": fp.target.source.hub,
        "repo": fp.target.source.repo,
        "revision": fp.target.source.revision,
        "commit": fp.snapshot.commit,
        "files": {f.path: f.expected.digest for f in fp.files},
    }
    (folder / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _install(fp: FolderPlan, files_dir: Path) -> None:
    """Move the verified ``files/`` into place as the model folder, in one rename."""
    write_marker(files_dir, fp)
    folder = fp.target.folder
    old = fp.staging / "old"
    try:
        if folder.exists():
            if old.exists():
                shutil.rmtree(old)
            os.rename(folder, old)
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.rename(files_dir, folder)
    except OSError as exc:
        raise KitError(
            f"{fp.target.key}: cannot move the verified files into {folder}: {exc.strerror or exc}",
            hint=f"the verified files are in {files_dir}; is {folder} a mount point?",
        ) from None
    shutil.rmtree(fp.staging, ignore_errors=True)


def _install_in_cache(fp: FolderPlan, files_dir: Path) -> None:
    """Move verified files into ``blobs/``, link the snapshot, then write ``refs/``."""
    folder = fp.target.folder
    commit = fp.snapshot.commit
    try:
        (folder / "blobs").mkdir(parents=True, exist_ok=True)
        for f in fp.files:
            staged = files_dir / f.path
            if staged.is_file():
                os.replace(staged, hub_cache.blob(folder, f))
            elif not hub_cache.blob(folder, f).is_file():
                raise KitError(
                    f"{fp.target.key}: {f.path} was neither staged nor in the cache",
                    hint="run kit pull --verify again: it fetches what is missing",
                )
        final = hub_cache.snapshot(folder, commit)
        if final.is_dir():  # the library (or an older pull) made it: replace links one by one
            for f in fp.files:
                link_tmp = final / f"{f.path}.kit-pull-link"
                _link(final / f.path, hub_cache.blob(folder, f), link_tmp)
        else:
            new = fp.staging / "snapshot"
            shutil.rmtree(new, ignore_errors=True)
            for f in fp.files:
                _link(new / f.path, hub_cache.blob(folder, f), None)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(new, final)
        if fp.target.source.revision != commit:
            refs = folder / "refs" / fp.target.source.revision
            refs.parent.mkdir(parents=True, exist_ok=True)
            tmp = refs.parent / f".{refs.name}.kit-pull"
            tmp.write_text(commit, encoding="utf-8")  # the library writes it without a newline
            os.replace(tmp, refs)
    except OSError as exc:
        raise KitError(
            f"{fp.target.key}: cannot install the verified files into the cache {folder}: "
            f"{exc.strerror or exc}",
            hint=f"the verified files are in {files_dir}; check the permissions of {folder}",
        ) from None
    shutil.rmtree(fp.staging, ignore_errors=True)


def _link(link: Path, target: Path, tmp: Path | None) -> None:
    """A relative symbolic link (the library's own form: it survives the mount's new root)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(target, link.parent)
    if tmp is None:
        os.symlink(rel, link)
        return
    tmp.unlink(missing_ok=True)
    os.symlink(rel, tmp)
    os.replace(tmp, link)


__all__ = [
    "DiskSpaceError",
    "FolderPlan",
    "HubError",
    "PullListener",
    "PullOptions",
    "PullResult",
    "QuietListener",
    "prepare",
    "run",
]
