"""Engine control: a stack's compose project on the Docker engine, through python-on-whales.

A :class:`Project` owns one folder (``$KIT_STATE_DIR/projects/<stack>``, default
``~/.local/state/kit``) holding the rendered compose file and its ``.env``. Everything the kit
does to containers goes through here; nothing else calls Docker.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from kit.errors import EngineError
from kit.plan import Plan
from kit.render import RenderOptions, render_compose, render_env


def state_dir() -> Path:
    env = os.environ.get("KIT_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "kit"


@dataclass(frozen=True)
class ContainerState:
    service: str
    id: str
    status: str  # created | running | restarting | exited | paused | dead | removing
    exit_code: int | None
    restart_count: int
    health: str | None  # starting | healthy | unhealthy | None (no healthcheck)

    @property
    def stopped(self) -> bool:
        return self.status in ("exited", "dead", "removing")


class Project:
    """The compose project of one stack."""

    def __init__(self, plan: Plan, *, options: RenderOptions | None = None) -> None:
        self.plan = plan
        self.name = plan.stack.name
        self.options = options or RenderOptions()
        self.folder = state_dir() / "projects" / self.name
        self.compose_file = self.folder / "docker-compose.yml"
        self.env_file = self.folder / ".env"
        self._client: DockerClient | None = None

    # --- files ----------------------------------------------------------------------------

    def write(self) -> bool:
        """Render the compose file and .env into the project folder. True if they changed."""
        self.folder.mkdir(parents=True, exist_ok=True)
        changed = False
        for path, text in (
            (self.compose_file, render_compose(self.plan, self.options)),
            (self.env_file, render_env(self.plan)),
        ):
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_text(text, encoding="utf-8")
                tmp.replace(path)
                changed = True
        return changed

    @property
    def client(self) -> DockerClient:
        if self._client is None:
            if not self.compose_file.exists():
                self.write()
            self._client = DockerClient(
                compose_files=[self.compose_file],
                compose_project_name=self.name,
                compose_project_directory=self.folder,
                compose_env_files=[self.env_file],
            )
        return self._client

    # --- actions --------------------------------------------------------------------------

    def start(self, services: list[str]) -> None:
        """Create and start ``services`` without waiting for their dependencies: the kit
        orders starts itself (see :mod:`kit.readiness`), so nothing here blocks for minutes."""
        self._run(
            "start",
            lambda: self.client.compose.up(
                services=services, detach=True, dependencies=False, quiet=True, color=False
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
        try:
            containers = self.client.compose.ps(all=True)
        except DockerException as exc:
            raise EngineError(f"docker compose ps failed: {_stderr(exc)}") from None
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
        try:
            return self.client.compose.logs(
                services=[service] if service else [],
                tail=str(tail) if tail is not None else None,
                no_log_prefix=service is not None,
            )
        except DockerException as exc:
            raise EngineError(f"docker compose logs failed: {_stderr(exc)}") from None

    def follow_logs(self, service: str | None = None, *, tail: int | None = 200):  # type: ignore[no-untyped-def]
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

    def _run(self, what: str, fn) -> None:  # type: ignore[no-untyped-def]
        try:
            fn()
        except DockerException as exc:
            raise EngineError(
                f"docker compose {what} failed for '{self.name}': {_stderr(exc)}"
            ) from None

    def remove_folder(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _stderr(exc: DockerException) -> str:
    text = (exc.stderr or exc.stdout or str(exc) or "").strip()
    return text.splitlines()[-1] if text else "unknown error"


def engine_available() -> str | None:
    """``None`` when the engine answers, else why not (for doctor and friendly errors)."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        DockerClient().system.info()
    except DockerException as exc:
        return f"the Docker engine does not answer: {_stderr(exc)}"
    return None
