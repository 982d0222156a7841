"""The lock file beside the stack file: which commit and which bytes each model folder holds.

``stacks/NAME.yaml`` -> ``stacks/NAME.lock.json``. For every pulled folder: the source (hub,
repo, the revision asked for), the commit it resolved to, and every file with its size and
checksum. The next ``kit pull`` of the same stack pulls that commit and checks those bytes,
whatever the branch has moved to; ``kit pull --update`` resolves the revision again and moves
the lock forward. Written atomically; commit it with the stack file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.errors import KitError
from kit.hub_checksum import Expected
from kit.hub_client import RemoteFile, Snapshot
from kit.hub_spec import PullSource

SCHEMA = 1
KIND = "kit-models-lock"


@dataclass(frozen=True)
class LockedModel:
    source: PullSource
    commit: str
    files: tuple[RemoteFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def snapshot(self) -> Snapshot:
        return Snapshot(self.source.repo, self.source.revision, self.commit, self.files)


def lock_path(stack_source: str) -> Path:
    """``stacks/NAME.yaml`` -> ``stacks/NAME.lock.json``."""
    p = Path(stack_source)
    stem = p.name.rsplit(".", 1)[0] if p.suffix.lower() in (".yaml", ".yml") else p.name
    return p.with_name(f"{stem}.lock.json")


def read(path: Path) -> dict[str, LockedModel]:
    """The locked folders by key; an absent file is an empty lock."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("kind") != KIND or data.get("schema") != SCHEMA:
            raise ValueError(f"not a kit models lock of schema {SCHEMA}")
        out = {}
        for key, m in data["models"].items():
            files = tuple(
                RemoteFile(
                    f["path"],
                    Expected(int(f["size"]), sha256=f.get("sha256"), git_oid=f.get("git_oid")),
                    lfs=bool(f.get("lfs", False)),
                )
                for f in m["files"]
            )
            src = PullSource(hub=m["hub"], repo=m["repo"], revision=m["revision"])
            out[key] = LockedModel(src, str(m["commit"]), files)
        return out
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KitError(
            f"the lock file {path} cannot be read: {exc}",
            hint="restore it from version control, or delete it and run kit pull --update",
        ) from None


def write(path: Path, stack_file: str, models: dict[str, LockedModel]) -> None:
    """Write the lock atomically (folders sorted, files sorted: stable diffs)."""
    data: dict[str, Any] = {
        "kind": KIND,
        "schema": SCHEMA,
        "stack": Path(stack_file).name,
        "models": {
            key: {
                "hub": m.source.hub,
                "repo": m.source.repo,
                "revision": m.source.revision,
                "commit": m.commit,
                "total_bytes": m.total_bytes,
                "files": [
                    {
                        "path": f.path,
                        "size": f.size,
                        **({"sha256": f.expected.sha256} if f.expected.sha256 else {}),
                        **({"git_oid": f.expected.git_oid} if f.expected.git_oid else {}),
                        **({"lfs": True} if f.lfs else {}),
                    }
                    for f in sorted(m.files, key=lambda f: f.path)
                ],
            }
            for key, m in sorted(models.items())
        },
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
