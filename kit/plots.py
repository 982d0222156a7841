"""PNG plots of a benchmark: latency distributions and throughput over time."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from kit import kinds
from kit.loadgen import Record


def latency_plot(runs: dict[str, tuple[str, list[Record]]], path: Path) -> Path:
    """One panel per latency metric; each run a histogram with its p50 and p99 marked."""
    metrics = [("E2E latency", lambda r: [r.e2e])]
    if any(kinds.kind(kind).generates for kind, _ in runs.values()):
        metrics = [
            ("TTFT", lambda r: [r.ttft] if r.ttft is not None else []),
            ("TPOT", lambda r: [(r.e2e - r.ttft) / (r.output_tokens - 1)]
             if r.ttft is not None and r.output_tokens and r.output_tokens > 1 else []),
            ("ITL", lambda r: r.itl),
            *metrics,
        ]  # fmt: skip
    fig, axes = plt.subplots(len(metrics), 1, figsize=(9, 2.6 * len(metrics)), squeeze=False)
    for ax, (title, get) in zip(axes[:, 0], metrics, strict=True):
        for label, (_, records) in runs.items():
            vals = np.array([v for r in records if r.ok and not r.warmup for v in get(r)]) * 1000
            if vals.size == 0:
                continue
            hi = np.percentile(vals, 99.5)
            ax.hist(vals[vals <= hi], bins=60, alpha=0.55, label=f"{label} (n={vals.size})")
            for p, style in ((50, "-"), (99, ":")):
                ax.axvline(np.percentile(vals, p), linestyle=style, linewidth=1, color="black")
        ax.set_title(f"{title} (ms; solid line p50, dotted p99)", fontsize=10)
        ax.set_xlabel("ms")
        ax.set_ylabel("requests" if title != "ITL" else "gaps")
    return _save(fig, axes, path)


def throughput_plot(
    runs: dict[str, tuple[str, list[Record]]], path: Path, bin_s: float = 1.0
) -> Path:
    """Completed requests/s (and output tokens/s for generating kinds) in time bins, per run."""
    gen = any(kinds.kind(kind).generates for kind, _ in runs.values())
    fig, axes = plt.subplots(2 if gen else 1, 1, figsize=(9, 6 if gen else 3.2), squeeze=False)
    for label, (kind, records) in runs.items():
        ok = [r for r in records if r.ok and not r.warmup]
        if not ok:
            continue
        t0 = min(r.start for r in ok)
        ends = np.array([r.start + r.e2e - t0 for r in ok])
        edges = np.arange(0, ends.max() + bin_s, bin_s)
        if edges.size < 2:
            edges = np.array([0, bin_s])
        counts, _ = np.histogram(ends, bins=edges)
        axes[0, 0].plot(edges[:-1], counts / bin_s, label=label)
        if gen and kinds.kind(kind).generates:
            toks, _ = np.histogram(ends, bins=edges, weights=[r.output_tokens or 0 for r in ok])
            axes[1, 0].plot(edges[:-1], toks / bin_s, label=label)
    axes[0, 0].set_title("completed requests per second", fontsize=10)
    axes[0, 0].set_xlabel("seconds since start")
    if gen:
        axes[1, 0].set_title("output tokens per second", fontsize=10)
        axes[1, 0].set_xlabel("seconds since start")
    return _save(fig, axes, path)


def _save(fig, axes, path: Path) -> Path:  # type: ignore[no-untyped-def]
    for ax in axes[:, 0]:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
