"""A training run's results folder: ``results/STACK/JOB-TIME/``.

- ``config.yaml``: the rendered TRL config the container read (mounted at /run);
- ``log_history.jsonl``: one line per logged step (step, time, loss, learning rate, tokens,
  and DPO's reward margins and accuracies);
- ``loss.png`` (plus reward margins for DPO);
- ``train.log``: the container's whole log;
- ``summary.json``: timings, steps, final loss, the adapter's path and content hash, the
  preempted services and how long they were away.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

MARGIN_KEY = "rewards/margins"


def new_run_dir(results: Path, stack: str, job: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = results / stack / f"{job}-{stamp}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    folder.mkdir(parents=True)
    return folder


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def write_history(path: Path, history: list[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for entry in history:
            f.write(json.dumps(entry) + "\n")
    return path


def content_hash(folder: Path) -> str:
    """sha256 over the adapter's files (names and bytes, sorted by name)."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def loss_plot(history: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Loss per step; DPO runs add the reward margin in a second panel."""
    points = [(e["step"], e["loss"]) for e in history if isinstance(e.get("loss"), float)]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    margins = [(e["step"], e[MARGIN_KEY]) for e in history if isinstance(e.get(MARGIN_KEY), float)]
    panels = 2 if margins else 1
    fig, axes = plt.subplots(panels, 1, figsize=(8, 3.2 * panels), squeeze=False)
    ax = axes[0, 0]
    ax.plot([s for s, _ in points], [v for _, v in points], marker=".", linewidth=1)
    ax.set_title(f"{title}: training loss", fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if margins:
        ax2 = axes[1, 0]
        ax2.plot([s for s, _ in margins], [v for _, v in margins], marker=".", color="tab:green")
        ax2.axhline(0, color="black", linewidth=0.6)
        ax2.set_title("reward margin (chosen - rejected)", fontsize=10)
        ax2.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
