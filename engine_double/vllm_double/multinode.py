"""vLLM's native multi-node launch as the double plays it (NOT vLLM; for the kit's tests).

`vllm serve ... --nnodes N --node-rank R --master-addr A --master-port P` (vLLM >= 0.11.1, mp
executor; `--headless` on the nodes after the first) seen from outside:

- each node runs world/N ranks (tensor x pipeline parallel / nodes), which must fit its GPUs;
- node 0 listens on the master port and waits until every other node has joined (torch's
  TCPStore rendezvous); a headless node connects to it, retrying until it answers. Once all
  joined, every node logs vLLM's "world_size=..." and "rank R in world size W is assigned as
  ..." lines for its own ranks (the lines the kit counts), then loads;
- a lost node is fatal: the head logs gloo's "Connection closed by peer" for the node's ranks
  and exits 1 (vLLM's engine dies with its workers); a headless node whose head is gone does
  the same. Only node 0 serves the API; a headless node never opens a port.

The wire between nodes is the double's own (one line per message over TCP), not torch's.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from .env import env_float
from .logs import err, ts

if TYPE_CHECKING:
    from .config import Config
    from .logs import Log

#: seconds a headless node keeps trying to reach the head (torch's default timeout: 10 min)
CONNECT_TIMEOUT_S = 600.0


class LostNode(Exception):
    """The connection to another node dropped: the message is the log text to print."""


class Rendezvous:
    """This node's links to the others; :meth:`join` waits until all are there, :meth:`watch`
    returns (raising :class:`LostNode`) when one drops."""

    def __init__(self, cfg: Config, log: Log) -> None:
        self.cfg = cfg
        self.log = log
        self.links: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        self.server: asyncio.base_events.Server | None = None

    # --- joining ----------------------------------------------------------------------------

    async def join(self) -> None:
        c = self.cfg
        self.log.core_line(
            "INFO", "multiproc_executor.py:134",
            f"node {c.node_rank} of {c.nnodes}: {c.local_world} local ranks, master "
            f"{c.master_addr}:{c.master_port}",
        )  # fmt: skip
        if c.node_rank == 0:
            await self._accept_all()
        else:
            await self._connect()
        for rank in c.local_ranks:
            self.log.core_line(
                "INFO", "parallel_state.py:1165",
                f"world_size={c.world} rank={rank} local_rank={rank - c.local_ranks[0]} "
                f"distributed_init_method=tcp://{c.master_addr}:{c.master_port} backend=nccl",
            )  # fmt: skip
        for rank in c.local_ranks:
            self.log.core_line(
                "INFO", "parallel_state.py:1208",
                f"rank {rank} in world size {c.world} is assigned as DP rank 0, PP rank "
                f"{rank // c.tp}, TP rank {rank % c.tp}, EP rank {rank % c.tp}",
            )  # fmt: skip

    async def _accept_all(self) -> None:
        c = self.cfg
        everyone = asyncio.Event()

        async def on_node(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            line = (await reader.readline()).decode().split()
            if len(line) != 2 or line[0] != "node" or not line[1].isdigit():
                writer.close()
                return
            node = int(line[1])
            self.links[node] = (reader, writer)
            self.log.core_line("INFO", "multiproc_executor.py:151",
                               f"node {node} joined ({len(self.links) + 1}/{c.nnodes} nodes)")  # fmt: skip
            if len(self.links) == c.nnodes - 1:
                everyone.set()

        self.server = await asyncio.start_server(on_node, host="0.0.0.0", port=c.master_port)
        await everyone.wait()
        for _reader, writer in self.links.values():
            writer.write(b"ready\n")
            await writer.drain()

    async def _connect(self) -> None:
        c = self.cfg
        await asyncio.sleep(max(env_float("KIT_DOUBLE_JOIN_DELAY", 0.0), 0.0))
        deadline = asyncio.get_running_loop().time() + env_float(
            "KIT_DOUBLE_CONNECT_TIMEOUT", CONNECT_TIMEOUT_S
        )
        while True:
            try:
                reader, writer = await asyncio.open_connection(c.master_addr, c.master_port)
                break
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    raise LostNode(
                        f"torch.distributed.DistStoreError: Timed out after "
                        f"{CONNECT_TIMEOUT_S:.0f} seconds waiting for clients. "
                        f"{c.nnodes - 1}/{c.nnodes} clients joined.\n"
                        f"(could not reach the master {c.master_addr}:{c.master_port})"
                    ) from None
                await asyncio.sleep(0.2)
        writer.write(f"node {c.node_rank}\n".encode())
        await writer.drain()
        if (await reader.readline()).strip() != b"ready":
            raise LostNode(self._closed_text(0))
        self.links[0] = (reader, writer)

    # --- watching ---------------------------------------------------------------------------

    async def watch(self) -> None:
        """Return when any link drops, raising :class:`LostNode` with what vLLM would log."""

        async def eof(node: int, reader: asyncio.StreamReader) -> int:
            with contextlib.suppress(OSError):
                while await reader.read(1024):
                    pass
            return node

        tasks = [asyncio.create_task(eof(n, r)) for n, (r, _w) in self.links.items()]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
        node = next(iter(done)).result()
        raise LostNode(self._closed_text(node))

    def _closed_text(self, node: int) -> str:
        c = self.cfg
        per = c.local_world
        ranks = ", ".join(str(r) for r in range(node * per, (node + 1) * per))
        return (
            f"(Worker pid=1) ERROR {ts()} [multiproc_executor.py:230] Worker proc of node "
            f"{c.node_rank} lost its peer: node {node} (ranks {ranks}) is gone\n"
            f"RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection "
            f"closed by peer [{c.master_addr}]:{c.master_port}\n"
            f"(EngineCore_DP0 pid=1) ERROR {ts()} [core.py:710] EngineCore encountered a fatal "
            "error: a worker of the multi-node world died\n"
        )

    def close(self) -> None:
        for _reader, writer in self.links.values():
            writer.close()
        if self.server is not None:
            self.server.close()


def config_problem(c: Config) -> str | None:
    """vLLM's refusal of the multi-node flags, or None."""
    if c.nnodes <= 1:
        return None
    if c.backend not in (None, "mp"):
        return "ValueError: nnodes > 1 can only be set when distributed exectuor backend is mp."
    if c.world % c.nnodes:
        return (
            f"AssertionError: global world_size ({c.world}) must be divisible by "
            f"nnodes_within_dp ({c.nnodes})."
        )
    if not 0 <= c.node_rank < c.nnodes:
        return f"ValueError: node_rank {c.node_rank} out of range for nnodes {c.nnodes}"
    return None


def report(text: str) -> None:
    err(text if text.endswith("\n") else text + "\n")
