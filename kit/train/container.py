"""A training job's one-shot container in the stack's compose project.

The job's compose file (``templates/train-compose.yaml.j2``) lives in the project folder beside
the stack's own, under the same project name, so ``kit down`` removes a job container that is
still there. Only the job's service is ever started, stopped or removed through it: never
``compose down`` on this file, which would take the stack's services for orphans.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from kit import __version__
from kit.errors import EngineError
from kit.train.jobplan import BASE_MOUNT, DATA_MOUNT, RUN_MOUNT, WORK_MOUNT, JobPlan

CONFIG_NAME = "config.yaml"


def service_name(job: str) -> str:
    return f"train-{job}"


def compose_context(project: str, job: JobPlan, image: str, run_dir: Path) -> dict[str, Any]:
    volumes = [
        {"source": job.base_host_path, "target": BASE_MOUNT, "read_only": True},
        {"source": job.work_host_path, "target": WORK_MOUNT, "read_only": False},
        {"source": str(run_dir), "target": RUN_MOUNT, "read_only": True},
    ]
    if job.method != "distill":
        volumes.append(
            {"source": job.data_host_path, "target": f"{DATA_MOUNT}/train.jsonl", "read_only": True}
        )
    command = ["--config", f"{RUN_MOUNT}/{CONFIG_NAME}"]
    if len(job.gpus) > 1:  # data parallel: one process per GPU (accelerate launch)
        command += ["--accelerate_config", "multi_gpu", "--num_processes", str(len(job.gpus))]
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "HF_HOME": f"{WORK_MOUNT}/.hf-home",
    }
    labels = {
        "kit.stack": project,
        "kit.job": job.name,
        "kit.kind": "train",
        "kit.method": job.method,
        "kit.gpus": ",".join(map(str, job.gpus)),
        "kit.output": job.output,
    }
    return {
        "kit_version": __version__,
        "project": project,
        "job": job.name,
        "method": job.method,
        "service": service_name(job.name),
        "image": image,
        "entrypoint": ["trl", job.trl_command],
        "command": command,
        "device_ids": [str(g) for g in job.gpus],
        "gpus_comment": ",".join(map(str, job.gpus)),
        "volumes": volumes,
        "environment": sorted(env.items()),
        "labels": sorted(labels.items()),
    }


def render_job_compose(project: str, job: JobPlan, image: str, run_dir: Path) -> str:
    from kit.jinja_env import environment

    ctx = compose_context(project, job, image, run_dir)
    return environment().get_template("train-compose.yaml.j2").render(**ctx)


@dataclass(frozen=True)
class JobState:
    id: str
    status: str
    exit_code: int | None
    oom_killed: bool

    @property
    def stopped(self) -> bool:
        return self.status in ("exited", "dead")


class JobContainer:
    """Start, watch, stop and remove one job's container."""

    def __init__(self, project: str, folder: Path, job: JobPlan) -> None:
        self.project = project
        self.job = job
        self.service = service_name(job.name)
        self.compose_file = folder / f"job-{job.name}.yml"
        self._client: DockerClient | None = None

    def write(self, text: str) -> None:
        self.compose_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.compose_file.with_name(self.compose_file.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.compose_file)

    @property
    def client(self) -> DockerClient:
        if self._client is None:
            self._client = DockerClient(
                compose_files=[self.compose_file],
                compose_project_name=self.project,
                compose_project_directory=self.compose_file.parent,
            )
        return self._client

    def _run(self, what: str, fn: Any) -> Any:
        try:
            return fn()
        except DockerException as exc:
            text = (exc.stderr or exc.stdout or str(exc) or "").strip()
            last = text.splitlines()[-1] if text else "unknown error"
            raise EngineError(
                f"docker compose {what} failed for job '{self.job.name}': {last}"
            ) from None

    def start(self) -> None:
        self._run(
            "up",
            lambda: self.client.compose.up(
                services=[self.service], detach=True, dependencies=False, quiet=True,
                color=False, force_recreate=True,
            ),
        )  # fmt: skip

    def state(self) -> JobState | None:
        containers = self._run(
            "ps", lambda: self.client.compose.ps(services=[self.service], all=True)
        )
        for c in containers:
            st = c.state
            return JobState(c.id, str(st.status), st.exit_code, bool(st.oom_killed))
        return None

    def follow(self, *, poll: float = 1.0, drain: float = 3.0) -> Iterator[bytes]:
        """The container's output as it comes, until it has stopped.

        The engine's log stream (``docker logs --follow``) is read on a daemon thread; this
        side also watches the container's state every ``poll`` seconds and returns ``drain``
        seconds after it stopped, so a log stream that does not end with the container (seen
        with compose's ``logs --follow`` when a container is killed) never hangs the job.
        """
        state = self.state()
        if state is None:
            return
        chunks: queue.Queue[bytes | None] = queue.Queue()

        def pump() -> None:
            try:
                for _source, chunk in self.client.container.logs(
                    state.id, follow=True, stream=True
                ):
                    chunks.put(chunk)
            except DockerException:
                pass
            finally:
                chunks.put(None)

        threading.Thread(target=pump, name=f"logs-{self.service}", daemon=True).start()
        stopped_at: float | None = None
        next_check = time.monotonic() + poll
        while True:
            try:
                chunk = chunks.get(timeout=poll)
            except queue.Empty:
                chunk = b""
            if chunk is None:
                return
            if chunk:
                yield chunk
            now = time.monotonic()
            if now >= next_check:
                next_check = now + poll
                st = self.state()
                if stopped_at is None and (st is None or st.stopped):
                    stopped_at = now
            if stopped_at is not None and now - stopped_at >= drain:
                return

    def logs(self) -> str:
        try:
            return str(self.client.compose.logs(services=[self.service], no_log_prefix=True))
        except DockerException:
            return ""

    def stop(self) -> None:
        self._run("stop", lambda: self.client.compose.stop(services=[self.service], timeout=20))

    def remove(self) -> None:
        """Stop and remove the job's container (nothing else of the project)."""
        self._run(
            "rm", lambda: self.client.compose.rm(services=[self.service], stop=True, volumes=True)
        )
