"""``kit doctor``: is this machine ready to run a stack? Each finding says how to fix it."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from kit.client import endpoint_for, port_is_open
from kit.compose_binary import compose_command
from kit.engine import engine_available
from kit.errors import KitError
from kit.stack_plan import Plan

GIB = 1024**3
MIN_SHM_GIB = 1.0
HOOK = "nvidia-container-runtime-hook"


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # ok | warn | fail
    message: str
    fix: str = ""


class DockerFacts(Protocol):
    """What doctor asks the Docker side. :class:`LocalDocker` asks the real one; tests inject
    a stand-in so the other checks run without Docker."""

    def engine_problem(self) -> str | None:
        """None when the engine answers, else why not."""
        ...

    def compose(self) -> tuple[list[str], str]:
        """The compose command and its version; raises :class:`KitError` when there is none."""
        ...

    def runtimes(self) -> list[str]:
        """The engine's container runtimes (``docker info``); empty when it does not answer."""
        ...

    def project_services(self, project: str) -> set[str]:
        """Services with a container in compose project ``project``."""
        ...


class LocalDocker:
    """The docker CLI and compose binary of this machine; ``client`` as in python-on-whales."""

    def __init__(self, client: DockerClient | None = None) -> None:
        self._client = client
        self._problem: tuple[str | None] | None = None

    @property
    def client(self) -> DockerClient:
        if self._client is None:
            self._client = DockerClient()
        return self._client

    def engine_problem(self) -> str | None:
        if self._problem is None:  # asked once per doctor run
            self._problem = (engine_available(self._client),)
        return self._problem[0]

    def compose(self) -> tuple[list[str], str]:
        cmd = compose_command()
        ver = subprocess.run(
            [*cmd, "version", "--short"], capture_output=True, text=True, check=False
        )
        return cmd, ver.stdout.strip()

    def runtimes(self) -> list[str]:
        try:
            return sorted((self.client.system.info().runtimes or {}).keys())
        except (DockerException, FileNotFoundError):
            return []

    def project_services(self, project: str) -> set[str]:
        try:
            containers = self.client.container.list(
                all=True, filters=[("label", f"com.docker.compose.project={project}")]
            )
        except (DockerException, FileNotFoundError):
            return set()
        return {
            c.config.labels["com.docker.compose.service"]
            for c in containers
            if "com.docker.compose.service" in (c.config.labels or {})
        }


def doctor(plan: Plan | None, *, docker: DockerFacts | None = None) -> list[Finding]:
    d = docker or LocalDocker()
    out = [_engine(d), _compose(d), _nvidia_driver(d), *_gpus(plan)]
    if plan is not None:
        out += _ports(plan, d) + _models(plan) + _api_key(plan)
    out += _disk(plan)
    return out


def _engine(docker: DockerFacts) -> Finding:
    why = docker.engine_problem()
    if why:
        return Finding(
            "docker engine",
            "fail",
            why,
            "install docker.io and start dockerd (scripts/docker-up.sh)",
        )
    return Finding("docker engine", "ok", "the engine answers")


def _compose(docker: DockerFacts) -> Finding:
    try:
        cmd, version = docker.compose()
    except KitError as exc:
        return Finding("docker compose", "fail", exc.message, exc.hint or "")
    how = "plugin" if cmd[-1] == "compose" else f"standalone binary {cmd[0]}"
    fix = (
        ""
        if how == "plugin"
        else "link it into ~/.docker/cli-plugins/docker-compose so `docker compose` works"
    )
    return Finding("docker compose", "ok" if not fix else "warn", f"{version} ({how})", fix)


def _nvidia_driver(docker: DockerFacts) -> Finding:
    hook = shutil.which(HOOK) or next(
        (str(p) for p in Path("/opt/kit-fake-nvidia/bin").glob(HOOK)), None
    )
    runtimes = docker.runtimes()
    if hook and "kit simulation" in Path(hook).read_text(errors="replace"):
        return Finding(
            "NVIDIA device driver",
            "warn",
            f"SIMULATED: {hook} is the kit's no-op hook; containers get NVIDIA_VISIBLE_DEVICES but no GPU",
            "on a GPU host install the NVIDIA Container Toolkit instead",
        )
    if hook or any("nvidia" in r for r in runtimes):
        return Finding(
            "NVIDIA device driver",
            "ok",
            f"NVIDIA container runtime found ({hook or 'runtime nvidia'})",
        )
    return Finding(
        "NVIDIA device driver",
        "fail",
        "no nvidia-container-runtime-hook: services with GPU reservations fail with "
        "'could not select device driver \"nvidia\"'",
        "install the NVIDIA Container Toolkit and restart dockerd",
    )


def _gpus(plan: Plan | None) -> list[Finding]:
    if shutil.which("nvidia-smi") is None:
        return [Finding("GPUs", "warn", "nvidia-smi not found: no GPUs visible on this machine",
                        "install the NVIDIA driver; without GPUs only `make demo` (simulation) runs")]  # fmt: skip
    proc = subprocess.run(
        ["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        return [
            Finding(
                "GPUs",
                "fail",
                f"nvidia-smi failed: {proc.stderr.strip()[:200]}",
                "check the NVIDIA driver",
            )
        ]
    rows = [r.split(", ") for r in proc.stdout.strip().splitlines() if r.strip()]
    mem = [float(r[2]) / 1024 for r in rows if len(r) == 3]
    found = [
        Finding(
            "GPUs",
            "ok",
            f"{len(rows)} x {rows[0][1] if rows else '?'}, {min(mem, default=0):.0f} GiB each",
        )
    ]
    if plan is not None:
        h = plan.stack.host
        if len(rows) < h.gpus:
            found.append(Finding("GPUs vs stack", "fail", f"the stack expects {h.gpus} GPUs, this host has {len(rows)}",
                                 "set host.gpus to what the host has"))  # fmt: skip
        if mem and min(mem) + 0.5 < h.memory_gib:
            found.append(Finding("GPU memory vs stack", "fail",
                                 f"the stack assumes {h.memory_gib:g} GiB per GPU, the smallest here has {min(mem):.1f}",
                                 "set host.gpu_memory_gib to the real size so the fit checks hold"))  # fmt: skip
    return found


def _ports(plan: Plan, docker: DockerFacts) -> list[Finding]:
    ours = docker.project_services(plan.stack.name) if docker.engine_problem() is None else set()
    out = []
    for s in plan.services:
        ep = endpoint_for(plan, s)
        if port_is_open(ep.host, s.port):
            if s.name in ours:
                out.append(Finding(f"port {s.port}", "ok", f"in use by this stack's {s.name}"))
            else:
                out.append(Finding(f"port {s.port}", "fail", f"{s.name}'s port is taken by another process",
                                   "stop it (`ss -ltnp`) or change the service's port"))  # fmt: skip
        else:
            out.append(Finding(f"port {s.port}", "ok", f"free for {s.name}"))
    return out


def _models(plan: Plan) -> list[Finding]:
    out = []
    for s in plan.services:
        if s.model_host_path is None:
            out.append(Finding(f"model {s.name}", "ok", f"{s.model} comes from the hub (HF cache)"))
            continue
        p = Path(s.model_host_path)
        if (p / "config.json").is_file():
            out.append(Finding(f"model {s.name}", "ok", f"{p} holds config.json"))
        elif p.is_dir():
            out.append(
                Finding(
                    f"model {s.name}",
                    "fail",
                    f"{p} has no config.json",
                    "download the full model folder",
                )
            )
        else:
            out.append(Finding(f"model {s.name}", "fail", f"{p} does not exist",
                               "download the model there, or fix defaults.model_root / model"))  # fmt: skip
    return out


def _api_key(plan: Plan) -> list[Finding]:
    f = plan.stack.api_key_file()
    if f is None:
        return [Finding("api key", "warn", "no API key: anyone who reaches the ports can use the models",
                        "set defaults.api_key_env_file to a file with VLLM_API_KEY=...")]  # fmt: skip
    if not f.is_file():
        return [
            Finding(
                "api key", "fail", f"{f} does not exist", "create it with VLLM_API_KEY=<secret>"
            )
        ]
    mode = f.stat().st_mode & 0o077
    if mode:
        return [Finding("api key", "warn", f"{f} is readable by others", f"chmod 600 {f}")]
    return [Finding("api key", "ok", f"{f} (contents not shown)")]


def _disk(plan: Plan | None) -> list[Finding]:
    out = []
    weights = sum(s.weights_gib or 0 for s in plan.services) if plan else 0
    places = {"/var/lib/docker": 20.0}
    if plan is not None:
        for s in plan.services:
            if s.model_host_path:
                places.setdefault(str(Path(s.model_host_path).parent), 0.0)
        for c in (plan.stack.defaults.cache.hf, plan.stack.defaults.cache.vllm):
            if c:
                places[plan.stack.host_path(c)] = max(10.0, weights * 0.1)
    for place, need in sorted(places.items()):
        p = Path(place)
        while not p.exists() and p != p.parent:
            p = p.parent
        free = shutil.disk_usage(p).free / GIB
        status = "ok" if free >= need else "warn"
        out.append(Finding(f"disk {place}", status, f"{free:.0f} GiB free",
                           "" if status == "ok" else f"free at least {need:.0f} GiB"))  # fmt: skip
    shm = Path("/dev/shm")
    if shm.exists():
        free = shutil.disk_usage(shm).free / GIB
        status = "ok" if free >= MIN_SHM_GIB else "warn"
        out.append(Finding("/dev/shm", status, f"{free:.1f} GiB free (vLLM's workers share memory through it)",
                           "" if status == "ok" else "grow /dev/shm or set ipc: private with shm_size"))  # fmt: skip
    return out
