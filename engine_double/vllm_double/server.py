"""The `vllm serve` process: startup checks in vLLM's order (or a forced failure), the loading
phases with the port bound but closed, serving, the never-ready mode, the crash timer, and a
prompt exit 0 on SIGTERM / SIGINT in every phase."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time

from . import multinode
from .api import API
from .config import Config
from .env import FAIL_CAUSES, env_flag, env_float, env_int
from .failures import bind_failure_text, crash_text, failure_text
from .http_server import Connections
from .logs import Log, err

PROCESS_START = time.monotonic()


class Server:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.log = Log(os.getpid())
        self.api = API(cfg)
        self.connections = Connections(
            self.api.dispatch, self.log.access if cfg.log_requests else None
        )
        self.phase = "starting"  # starting -> loading -> ready -> stopping
        self.exit_code = 0
        self.stop_event: asyncio.Event | None = None
        self.sock: socket.socket | None = None
        self.listener: asyncio.base_events.Server | None = None
        self.rendezvous: multinode.Rendezvous | None = None
        self.watcher: asyncio.Task | None = None

    async def sleep_or_stop(self, seconds: float) -> bool:
        """Sleep; True when the process was asked to stop meanwhile."""
        assert self.stop_event is not None
        if seconds <= 0:
            return self.stop_event.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), timeout=seconds)
        return self.stop_event.is_set()

    def bind_socket(self) -> bool:
        """vLLM binds its port before loading the model but only listens once ready."""
        c = self.cfg
        host = c.host or "0.0.0.0"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, c.port))
        except OSError as exc:
            sock.close()
            err(bind_failure_text(self.log, exc))
            return False
        sock.setblocking(False)
        self.sock = sock
        return True

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.on_signal)
        crash_after = os.environ.get("KIT_DOUBLE_CRASH_AFTER", "").strip()
        crash_task = None
        if crash_after:
            crash_task = asyncio.create_task(
                self.crash_timer(env_float("KIT_DOUBLE_CRASH_AFTER", 0.0))
            )
        try:
            return await self._run()
        finally:
            if crash_task:
                crash_task.cancel()
            if self.watcher:
                self.watcher.cancel()
            if self.rendezvous:
                self.rendezvous.close()
            await self.close_http()

    async def _run(self) -> int:
        c = self.cfg
        log = self.log
        forced = os.environ.get("KIT_DOUBLE_FAIL", "").strip().lower()
        if forced and forced not in FAIL_CAUSES:
            err(
                f"kit-engine-double: unknown KIT_DOUBLE_FAIL={forced!r}; known: {', '.join(FAIL_CAUSES)}\n"
            )
            return 2
        if forced == "unrecognized_args":
            err(failure_text("unrecognized_args", c, log))
            return env_int("KIT_DOUBLE_EXIT_CODE", 2)

        self.phase = "loading"
        log.preamble(c)
        if not c.headless and not self.bind_socket():  # a headless node serves no API
            return 1

        async def fail(cause: str) -> int:
            # stdout and stderr reach `docker logs` through separate pipes: give the INFO lines
            # a head start so the traceback reads last, as it does with vLLM
            await asyncio.sleep(0.05)
            err(failure_text(cause, c, log))
            return env_int("KIT_DOUBLE_EXIT_CODE", 1)

        # A forced cause replaces the real checks; otherwise check like vLLM, in vLLM's order:
        # speculators probe + ModelConfig, then ParallelConfig, then VllmConfig.
        natural = not forced
        if forced in ("model_missing", "gated_401", "trust_remote_code"):
            return await fail(forced)
        if natural and c.model_problem == "missing":
            return await fail("model_missing")
        if natural and c.auto_map and not c.trust_remote_code:
            return await fail("trust_remote_code")
        log.model_resolved(c)
        if forced == "world_size" or (natural and c.local_world > 1 and c.local_world > c.gpus):
            return await fail("world_size")
        if c.nnodes > 1:  # vLLM's native multi-node launch: every node joins first
            problem = multinode.config_problem(c)
            if problem:
                await asyncio.sleep(0.05)
                multinode.report(problem)
                return 1
            joined = await self.join_nodes()
            if joined is not None:
                return joined
        if forced == "heads" or (natural and c.num_heads and int(c.num_heads) % c.tp != 0):
            return await fail("heads")
        log.engine_init(c)

        load = max(env_float("KIT_DOUBLE_LOAD_SECONDS", 2.0), 0.0)
        if forced == "free_memory":
            if await self.sleep_or_stop(load * 0.2):
                return self.exit_code
            return await fail("free_memory")
        if await self.sleep_or_stop(load * 0.15):
            return self.exit_code
        log.loading_started(c)
        if env_flag("KIT_DOUBLE_NEVER_READY"):
            return await self.never_ready()
        if await self.sleep_or_stop(load * 0.35):
            return self.exit_code
        log.shards(1)
        if await self.sleep_or_stop(load * 0.2):
            return self.exit_code
        if forced == "oom":
            return await fail("oom")
        log.model_loaded(c, load)
        if await self.sleep_or_stop(load * 0.3):
            return self.exit_code
        log.engine_initialized(c, load)
        if self.stop_event.is_set():
            return self.exit_code
        if c.headless:
            log.core_line("INFO", "core.py:1032", "Headless node: workers ready; the head serves")
            await self.stop_event.wait()
            return self.exit_code
        return await self.serve()

    async def join_nodes(self) -> int | None:
        """Wait until every node joined (None), or the exit code when stopped or failed; then
        watch the other nodes: losing one ends this process with exit status 1."""
        assert self.stop_event is not None
        self.rendezvous = multinode.Rendezvous(self.cfg, self.log)
        joining = asyncio.create_task(self.rendezvous.join())
        stopping = asyncio.create_task(self.stop_event.wait())
        done, _ = await asyncio.wait({joining, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if joining not in done:
            joining.cancel()
            return self.exit_code
        stopping.cancel()
        try:
            joining.result()
        except multinode.LostNode as exc:
            multinode.report(str(exc))
            return 1
        self.watcher = asyncio.create_task(self.watch_nodes())
        return None

    async def watch_nodes(self) -> None:
        assert self.rendezvous is not None and self.stop_event is not None
        try:
            await self.rendezvous.watch()
        except multinode.LostNode as exc:
            if self.stop_event.is_set():
                return
            await self.close_http()
            multinode.report(str(exc))
            self.exit_code, self.phase = 1, "stopping"
            self.stop_event.set()

    async def never_ready(self) -> int:
        interval = max(env_float("KIT_DOUBLE_LOG_INTERVAL", 5.0), 0.05)
        while not await self.sleep_or_stop(interval):
            self.log.waiting_for_core()
        return self.exit_code

    async def serve(self) -> int:
        assert self.sock is not None
        self.listener = await self.connections.listen(self.sock)
        self.phase = "ready"
        self.log.serving(self.cfg, self.api.routes)
        assert self.stop_event is not None
        await self.stop_event.wait()
        return self.exit_code

    def on_signal(self) -> None:
        if self.stop_event is None or self.stop_event.is_set():
            return
        self.phase, was = "stopping", self.phase
        self.stop_event.set()  # first: a log write to a closed pipe must not cancel the stop
        if was == "ready":
            with contextlib.suppress(OSError, ValueError):
                self.log.shutdown()

    async def crash_timer(self, after: float) -> None:
        delay = PROCESS_START + after - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        assert self.stop_event is not None
        if self.stop_event.is_set():
            return
        await asyncio.sleep(0.05)  # let pending INFO lines reach the log first
        serving = self.phase == "ready"
        if serving:
            await self.close_http()
        err(crash_text(self.cfg, self.log, serving))
        self.exit_code = env_int("KIT_DOUBLE_EXIT_CODE", 0)
        self.phase = "stopping"
        self.stop_event.set()

    async def close_http(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        elif self.sock is not None:
            self.sock.close()
        self.sock = None
        self.connections.close_all()
