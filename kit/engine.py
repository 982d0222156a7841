"""Engine control: a stack's compose project on a container engine.

:class:`Engine` is what the rest of the kit needs from an engine: write the project's files,
start services, read container states and logs, see a container's GPUs, take the project down.
:class:`Project` is the real one, on the Docker engine through python-on-whales; nothing else in
the kit calls Docker for a stack. Tests script containers over fake time with an in-memory
double of the same interface (``tests/fakeengine.py``).

A :class:`Project` owns one folder (``$KIT_STATE_DIR/projects/<stack>``, default
``~/.local/state/kit``) holding the rendered compose file, its ``.env`` and the deployment
record (:mod:`kit.record`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from kit.errors import EngineError
from kit.render import RenderOptions, render_compose, render_env
from kit.stack_plan import Plan

T = TypeVar("T")


def state_dir() -> Path:
    env = os.environ.get("KIT_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "kit"


def project_folder(name: str) -> Path:
    """Where the files of compose project ``name`` live."""
    return state_dir() / "projects" / name


@dataclass(frozen=True)
class ContainerState:
    service: str
    id: str
    status: str  # created | running | restarting | exited | paused | dead | removing
    exit_code: int | None
    restart_count: int
    health: str | None  # starting | healthy | unhealthy | None (no healthcheck)
    #: which container this is, for messages, when a service has several or its host matters
    #: (kit.hosts: "container on host 'b'", "native worker big-node1 on host 'b'")
    part: str = ""

    @property
    def stopped(self) -> bool:
        return self.status in ("exited", "dead", "removing")


class Engine(Protocol):
    """One stack's compose project on a container engine: what the kit needs from it.

    Implementations: :class:`Project` (Docker, through python-on-whales) and the in-memory test
    double in ``tests/fakeengine.py``. Failures of the engine raise
    :class:`~kit.errors.EngineError`.
    """

    #: the compose project name (the stack's name)
    name: str
    #: what the project runs; its files are rendered from it
    plan: Plan
    options: RenderOptions
    #: the project's folder: compose file, ``.env``, deployment record
    folder: Path

    def available(self) -> str | None:
        """``None`` when the engine answers, else why not."""
        ...

    def write(self) -> bool:
        """Render the project's files into :attr:`folder`. True if they changed."""
        ...

    def start(self, services: Sequence[str]) -> None:
        """Create and start ``services`` (without their dependencies); returns at once."""
        ...

    def states(self) -> dict[str, ContainerState]:
        """The project's containers by service, stopped ones included."""
        ...

    def logs(self, service: str | None = None, *, tail: int | None = 200) -> str: ...

    def follow_logs(
        self, service: str | None = None, *, tail: int | None = 200
    ) -> Iterable[tuple[str, bytes]]:
        """``(source, line)`` pairs as they come, until the containers stop."""
        ...

    def container_logs(self, container_id: str, *, tail: int = 60) -> str:
        """Logs of one container, also after it exited; a note instead of an error."""
        ...

    def visible_devices(self, container_id: str) -> str | None:
        """``NVIDIA_VISIBLE_DEVICES`` as the container's main process sees it."""
        ...

    def down(self, *, volumes: bool = False) -> None:
        """Stop and remove the project's containers and network (nothing running: no-op)."""
        ...

    def remove_folder(self) -> None: ...


class Project:
    """The compose project of one stack on the Docker engine.

    ``client``: the python-on-whales client to use, configured for this project (compose file,
    project name, project directory, env file); default: one for :attr:`folder` and the
    ``docker`` CLI. ``docker``: the client for engine-wide calls (``docker info``).
    """

    def __init__(
        self,
        plan: Plan,
        *,
        options: RenderOptions | None = None,
        client: DockerClient | None = None,
        docker: DockerClient | None = None,
    ) -> None:
        self.plan = plan
        self.name = plan.stack.name
        self.options = options or RenderOptions()
        self.folder = project_folder(self.name)
        self.compose_file = self.folder / "docker-compose.yml"
        self.env_file = self.folder / ".env"
        self._client = client
        self._docker = docker

    # --- files ----------------------------------------------------------------------------

    def write(self) -> bool:
        """Render the compose file and .env into the project folder. True if they changed."""
        self.folder.mkdir(parents=True, exist_ok=True)
        changed = False
        for path, text in (
            (self.compose_file, self.compose_text()),
            (self.env_file, render_env(self.plan)),
        ):
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_text(text, encoding="utf-8")
                tmp.replace(path)
                changed = True
        return changed

    def compose_text(self) -> str:
        """The compose file this project runs (a host's part of it, in a subclass)."""
        return render_compose(self.plan, self.options)

    def engine_kwargs(self) -> dict[str, Any]:
        """How to reach this project's Docker engine (the default one here)."""
        return {}

    @property
    def client(self) -> DockerClient:
        if not self.compose_file.exists():
            self.write()
        if self._client is None:
            self._client = DockerClient(
                **self.engine_kwargs(),
                compose_files=[self.compose_file],
                compose_project_name=self.name,
                compose_project_directory=self.folder,
                compose_env_files=[self.env_file],
            )
        return self._client

    # --- actions --------------------------------------------------------------------------

    def available(self) -> str | None:
        return engine_available(self._docker)

    def start(self, services: Sequence[str]) -> None:
        """Create and start ``services`` without waiting for their dependencies: the kit
        orders starts itself (see :mod:`kit.readiness`), so nothing here blocks for minutes."""
        self._run(
            "start",
            lambda: self.client.compose.up(
                services=list(services), detach=True, dependencies=False, quiet=True, color=False
            ),
        )

    def down(self, *, volumes: bool = False) -> None:
        self._run(
            "down",
            lambda: self.client.compose.down(
                remove_orphans=True, volumes=volumes, timeout=30, quiet=True
            ),
        )

    def states(self) -> dict[str, ContainerState]:
        """Current containers of the project by service (one replica per service)."""
        containers = self._run("ps", lambda: self.client.compose.ps(all=True))
        out: dict[str, ContainerState] = {}
        for c in containers:
            labels = c.config.labels or {}
            service = labels.get("com.docker.compose.service")
            if not service:
                continue
            st = c.state
            out[service] = ContainerState(
                service=service,
                id=c.id,
                status=str(st.status),
                exit_code=st.exit_code,
                restart_count=c.restart_count or 0,
                health=str(st.health.status) if st.health and st.health.status else None,
            )
        return out

    def logs(self, service: str | None = None, *, tail: int | None = 200) -> str:
        return self._run(
            "logs",
            lambda: self.client.compose.logs(
                services=[service] if service else [],
                tail=str(tail) if tail is not None else None,
                no_log_prefix=service is not None,
            ),
        )

    def follow_logs(
        self, service: str | None = None, *, tail: int | None = 200
    ) -> Iterable[tuple[str, bytes]]:
        return self.client.compose.logs(
            services=[service] if service else [],
            tail=str(tail) if tail is not None else None,
            follow=True,
            stream=True,
        )

    def container_logs(self, container_id: str, *, tail: int = 60) -> str:
        """Logs of one container (also works for a container that has exited)."""
        try:
            return self.client.container.logs(container_id, tail=tail)
        except DockerException as exc:
            return f"(logs unavailable: {_stderr(exc)})"

    def visible_devices(self, container_id: str) -> str | None:
        """NVIDIA_VISIBLE_DEVICES as the container's main process sees it. The engine's
        NVIDIA device driver sets it in the process environment at start, so it is neither
        in the container's config nor in the environment of ``docker exec``."""
        try:
            raw = self.client.container.execute(container_id, ["cat", "/proc/1/environ"])
        except DockerException:
            return None
        for item in str(raw).split("\0"):
            key, _, value = item.partition("=")
            if key == "NVIDIA_VISIBLE_DEVICES":
                return value.strip()
        return None

    def _run(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except DockerException as exc:
            raise EngineError(
                f"docker compose {what} failed for '{self.name}': {_stderr(exc)}"
            ) from None

    def remove_folder(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def down_by_name(name: str, *, volumes: bool = False, docker: DockerClient | None = None) -> None:
    """Take compose project ``name`` down without a plan: by its labels, with the compose file
    left in its folder if there is one. For when the deployment record cannot be read."""
    folder = project_folder(name)
    compose_file = folder / "docker-compose.yml"
    client = docker or DockerClient(
        compose_files=[compose_file] if compose_file.is_file() else [],
        compose_project_name=name,
        compose_project_directory=folder if folder.is_dir() else None,
    )
    try:
        client.compose.down(remove_orphans=True, volumes=volumes, timeout=30, quiet=True)
    except DockerException as exc:
        raise EngineError(f"docker compose down failed for '{name}': {_stderr(exc)}") from None


def _stderr(exc: DockerException) -> str:
    text = (exc.stderr or exc.stdout or str(exc) or "").strip()
    return text.splitlines()[-1] if text else "unknown error"


def engine_available(docker: DockerClient | None = None) -> str | None:
    """``None`` when the engine answers, else why not (for doctor and friendly errors)."""
    if docker is None and shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        (docker or DockerClient()).system.info()
    except DockerException as exc:
        return f"the Docker engine does not answer: {_stderr(exc)}"
    except FileNotFoundError as exc:
        return f"the docker CLI cannot be run: {exc}"
    return None
