"""A worker process on NATS for the durable-STOP and load tests.

    python nats_worker.py URL NAMESPACE NAME sqlite|postgres|none STORE [asyncio|trio] [LIMIT]

With a store (a SQLite file or a Postgres dsn, where STOP tombstones are kept)
it hosts ``hold-NAME`` (says "started" as a thought delta, then waits to be
cancelled) and ``echo-NAME`` (capability ``echo-NAME``; answers with how many
echo calls this process has run).  With ``none`` it hosts only ``work-NAME``
(capability ``work``: every such worker is in the one queue group ``caps:work``;
waits 20 ms, answers with NAME).  ``max_concurrent_tasks=LIMIT`` if given.
Runs until SIGTERM (or SIGKILL).
"""

from __future__ import annotations

import os
import signal as os_signal
import sys
from typing import Any

import anyio
import anyio.abc
from nats_util import Inbox

from cosmonapse import Axon, Dendrite, NeuronContext, connect_synapse
from cosmonapse.registry.postgres import PostgresRegistryStore
from cosmonapse.registry.sqlite import SqliteRegistryStore


async def main(url: str, namespace: str, name: str, kind: str, store_arg: str, limit: int) -> None:
    calls = 0

    async def hold(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        await ctx.emit_thought_delta("started")
        await anyio.sleep_forever()
        return {}

    async def echo(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"calls": calls, "pid": os.getpid()}

    async def work(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        await anyio.sleep(0.02)  # allowed: an I/O-bound Neuron's work
        return {"by": name}

    store: SqliteRegistryStore | PostgresRegistryStore | None = None
    if kind == "sqlite":
        store = SqliteRegistryStore(store_arg)
    elif kind == "postgres":
        store = PostgresRegistryStore(store_arg)
    synapse = await connect_synapse(url)
    try:
        worker = Dendrite(
            synapse=synapse, namespace=namespace, role="worker", dendrite_id=f"{name}-{os.getpid()}",
            registry_store=store, heartbeat_s=0, max_concurrent_tasks=limit,
        )  # fmt: skip
        if store is None:
            worker.attach_axon(Axon(f"work-{name}", work, ["work"]))
        else:
            worker.attach_axon(Axon(f"hold-{name}", hold))
            worker.attach_axon(Axon(f"echo-{name}", echo, [f"echo-{name}"]))
        with anyio.open_signal_receiver(os_signal.SIGTERM) as signals:
            async with worker:
                async for _ in signals:
                    break
    finally:
        await synapse.close()
        if store is not None:
            await store.close()


class WorkerProcess:
    """This script as a child process of a test (start, SIGKILL, SIGTERM)."""

    def __init__(
        self, url: str, namespace: str, name: str, kind: str, store: str, backend: str, limit: int = 10_000
    ) -> None:
        self.args = [sys.executable, __file__, url, namespace, name, kind, store, backend, str(limit)]
        self.name = name
        self.ready_neuron = f"work-{name}" if kind == "none" else f"echo-{name}"
        self.proc: anyio.abc.Process | None = None

    async def start(self, registers: Inbox) -> None:
        seen = len(registers.items)
        self.proc = await anyio.open_process(
            self.args, stdout=None, stderr=None, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        # REGISTERs come after the worker's SUBs on the same connection: it is live then.
        with anyio.fail_after(30):
            while not any(
                s.directed and s.directed.id == self.ready_neuron and s.payload.get("pid") is None
                for s in registers.items[seen:]
            ):
                await registers.wait_for(len(registers.items) + 1, timeout_s=30)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(os_signal.SIGKILL)
        with anyio.fail_after(10):
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(os_signal.SIGTERM)
            with anyio.fail_after(20):
                await self.proc.wait()


if __name__ == "__main__":
    url, namespace, name, kind, store_arg = sys.argv[1:6]
    backend = (sys.argv[6:] or ["asyncio"])[0]
    limit = int(sys.argv[7]) if len(sys.argv) > 7 else 10_000
    anyio.run(main, url, namespace, name, kind, store_arg, limit, backend=backend)
