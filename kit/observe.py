"""The engines' own view of a running stack, from each vLLM's ``/metrics``: requests running
and waiting, KV-cache usage, preemptions, generated tokens and time to first token.

Used by ``kit top`` (a live table per service and replica) and by ``kit bench``, which records
the series during each run (``server.jsonl``) and plots them (``server.png``) under the
client's figures. Metric names follow the pinned vLLM version
(:func:`kit.vllm_versions.metric_names`). An engine that publishes a port is read over HTTP;
one behind the gateway is read inside its container (:class:`kit.gateway_probe.ExecProbe`).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kit import replicas
from kit import vllm_versions as vv
from kit.client import PortClosed

if TYPE_CHECKING:
    from kit.engine import Engine
    from kit.readiness import Probe
    from kit.service_plan import ServicePlan
    from kit.stack_plan import Plan

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> ``name`` (and ``name{le="x"}`` for buckets) -> value, summed
    over every other label (engines of one server, models, finish reasons)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        name, labels, raw = m.groups()
        try:
            value = float(raw)
        except ValueError:
            continue
        key = name
        if name.endswith("_bucket") and labels:
            le = re.search(r'le="([^"]*)"', labels)
            key = f'{name}{{le="{le[1]}"}}' if le else name
        out[key] = out.get(key, 0.0) + value
    return out


@dataclass(frozen=True)
class Sample:
    """One scrape of one engine (``t``: seconds on the caller's clock)."""

    t: float
    container: str
    service: str
    running: float | None
    waiting: float | None
    kv_cache_usage: float | None
    preemptions: float | None
    generation_tokens: float | None
    ttft_sum: float | None
    ttft_count: float | None
    ttft_buckets: tuple[tuple[float, float], ...] = ()

    @staticmethod
    def from_metrics(
        t: float, container: str, service: str, m: dict[str, float], v: vv.Version
    ) -> Sample:
        def pick(role: str, suffix: str = "") -> float | None:
            for name in vv.metric_names(role, v):
                if name + suffix in m:
                    return m[name + suffix]
            return None

        (ttft,) = vv.metric_names("ttft", v)
        buckets = []
        for key, value in m.items():
            if key.startswith(f"{ttft}_bucket{{le="):
                le = key.split('"')[1]
                buckets.append((float("inf") if le == "+Inf" else float(le), value))
        return Sample(
            t=t,
            container=container,
            service=service,
            running=pick("running"),
            waiting=pick("waiting"),
            kv_cache_usage=pick("kv_cache_usage"),
            preemptions=pick("preemptions"),
            generation_tokens=pick("generation_tokens"),
            ttft_sum=pick("ttft", "_sum"),
            ttft_count=pick("ttft", "_count"),
            ttft_buckets=tuple(sorted(buckets)),
        )


@dataclass(frozen=True)
class Rates:
    """What changed between two samples of one engine."""

    generation_tps: float | None
    ttft_mean_ms: float | None
    ttft_p50_ms: float | None
    preempted: float | None


def rates(a: Sample, b: Sample) -> Rates:
    dt = b.t - a.t
    tps = None
    if dt > 0 and a.generation_tokens is not None and b.generation_tokens is not None:
        tps = max(0.0, b.generation_tokens - a.generation_tokens) / dt
    mean = p50 = None
    if a.ttft_count is not None and b.ttft_count is not None and b.ttft_count > a.ttft_count:
        n = b.ttft_count - a.ttft_count
        if a.ttft_sum is not None and b.ttft_sum is not None:
            mean = 1000 * (b.ttft_sum - a.ttft_sum) / n
        p50 = _histogram_quantile(0.5, a.ttft_buckets, b.ttft_buckets)
    pre = None
    if a.preemptions is not None and b.preemptions is not None:
        pre = max(0.0, b.preemptions - a.preemptions)
    return Rates(tps, mean, p50, pre)


def _histogram_quantile(q: float, before: tuple, after: tuple) -> float | None:  # type: ignore[type-arg]
    """Prometheus' histogram_quantile over the requests between two scrapes, in ms."""
    old = dict(before)
    deltas = [(le, c - old.get(le, 0.0)) for le, c in after]
    if not deltas or deltas[-1][1] <= 0:
        return None
    rank = q * deltas[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in deltas:
        if c >= rank:
            if le == float("inf"):
                return 1000 * prev_le
            return 1000 * (prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-12))
        prev_le, prev_c = le, c
    return None


def engines(plan: Plan, services: list[str] | None = None) -> list[ServicePlan]:
    """The containers of ``services`` (stack service names or replica names; all by
    default), every replica of a replicated service."""
    groups = replicas.groups(plan.services)
    if not services:
        return list(plan.services)
    out: list[ServicePlan] = []
    for name in services:
        members = groups.get(name) or [plan.service(name)]
        out += [m for m in members if m not in out]
    return out


class Scraper:
    """Reads ``/metrics`` of a stack's engines (published port, or inside the container)."""

    def __init__(self, plan: Plan, project: Engine | None = None, *, exec_interval: float = 0.0):
        from kit.gateway_probe import StackEndpoints

        self.plan = plan
        self.version = plan.stack.defaults.version
        self._net = StackEndpoints(project) if project is not None else None
        self._exec_interval = exec_interval
        self._probes: dict[str, Probe] = {}

    def _probe(self, s: ServicePlan) -> Probe:
        if s.name not in self._probes:
            from kit.client import endpoint_for

            if s.published or self._net is None:
                self._probes[s.name] = endpoint_for(self.plan, s)
            else:
                probe = self._net.endpoint(self.plan, s)
                probe.interval = self._exec_interval  # type: ignore[attr-defined]
                self._probes[s.name] = probe
        return self._probes[s.name]

    def scrape(self, s: ServicePlan, now: float | None = None) -> Sample | None:
        try:
            r = self._probe(s).get("/metrics", timeout=3)
        except (PortClosed, OSError):
            return None
        if r.status != 200:
            return None
        t = time.monotonic() if now is None else now
        m = parse_metrics(r.body.decode("utf-8", "replace"))
        return Sample.from_metrics(t, s.name, s.replica_of or s.name, m, self.version)


class ServerRecorder:
    """Scrapes ``targets`` every ``interval`` seconds in a thread while a benchmark runs and
    writes each sample as a line of ``server.jsonl``; :meth:`plot` draws ``server.png``."""

    def __init__(
        self,
        scraper: Scraper,
        targets: list[ServicePlan],
        folder: Path,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scraper, self.targets, self.interval, self.clock = scraper, targets, interval, clock
        self.path = folder / "server.jsonl"
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def __enter__(self) -> ServerRecorder:
        self._t0 = self.clock()
        self._thread = threading.Thread(target=self._run, name="kit-server-metrics", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._tick()  # the state at the end of the run

    def _run(self) -> None:
        with self.path.open("a", encoding="utf-8"):
            pass
        while not self._stop.is_set():
            self._tick()
            self._stop.wait(self.interval)

    def _tick(self) -> None:
        rows = []
        for s in self.targets:
            sample = self.scraper.scrape(s, self.clock() - self._t0)
            if sample is not None:
                self.samples.append(sample)
                rows.append(json.dumps(asdict(sample)))
        if rows:
            with self.path.open("a", encoding="utf-8") as f:
                f.write("\n".join(rows) + "\n")

    def plot(self, path: Path) -> Path | None:
        if not self.samples:
            return None
        return server_plot(self.samples, path)


def server_plot(samples: list[Sample], path: Path) -> Path:
    """Running/waiting requests, KV-cache usage and preemptions over the run, per engine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by: dict[str, list[Sample]] = {}
    for s in samples:
        by.setdefault(s.container, []).append(s)
    panels = [
        ("requests running (solid) and waiting (dashed)", ("running", "waiting")),
        ("KV-cache usage (%)", ("kv_cache_usage",)),
        ("preemptions since the run began", ("preemptions",)),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.4 * len(panels)), sharex=True)
    for ax, (title, fields) in zip(axes, panels, strict=True):
        for name, rows in sorted(by.items()):
            for field, style in zip(fields, ("-", "--"), strict=False):
                pts = [(r.t, getattr(r, field)) for r in rows if getattr(r, field) is not None]
                if not pts:
                    continue
                xs, ys = zip(*pts, strict=True)
                if field == "kv_cache_usage":
                    ys = tuple(100 * y for y in ys)
                if field == "preemptions":
                    ys = tuple(y - ys[0] for y in ys)
                label = name if style == "-" else None
                ax.plot(xs, ys, style, label=label, linewidth=1.2)
        ax.set_title(f"server side: {title}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper right")
    axes[-1].set_xlabel("seconds since the run began")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
