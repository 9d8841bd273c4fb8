"""A worker process for the durable-STOP tests.

    python stop_worker.py URL NAMESPACE NAME sqlite|postgres STORE [asyncio|trio]

Hosts ``hold-NAME`` (says "started" as a thought delta, then waits to be
cancelled) and ``echo-NAME`` (capability ``echo-NAME``; answers with how many
echo calls this process has run), with the registry store given (a SQLite file
or a Postgres dsn), where STOP tombstones are kept.  Runs until SIGTERM (or SIGKILL).
"""

from __future__ import annotations

import os
import signal as os_signal
import sys
from typing import Any

import anyio

from cosmonapse import Axon, Dendrite, NeuronContext, connect_synapse
from cosmonapse.registry.postgres import PostgresRegistryStore
from cosmonapse.registry.sqlite import SqliteRegistryStore


async def main(url: str, namespace: str, name: str, kind: str, store_arg: str) -> None:
    calls = 0

    async def hold(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        await ctx.emit_thought_delta("started")
        await anyio.sleep_forever()
        return {}

    async def echo(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"calls": calls, "pid": os.getpid()}

    store = SqliteRegistryStore(store_arg) if kind == "sqlite" else PostgresRegistryStore(store_arg)
    synapse = await connect_synapse(url)
    try:
        worker = Dendrite(
            synapse=synapse, namespace=namespace, role="worker", dendrite_id=f"{name}-{os.getpid()}",
            registry_store=store, heartbeat_s=0,
        )  # fmt: skip
        worker.attach_axon(Axon(f"hold-{name}", hold))
        worker.attach_axon(Axon(f"echo-{name}", echo, [f"echo-{name}"]))
        with anyio.open_signal_receiver(os_signal.SIGTERM) as signals:
            async with worker:
                async for _ in signals:
                    break
    finally:
        await synapse.close()
        await store.close()


if __name__ == "__main__":
    url, namespace, name, kind, store_arg = sys.argv[1:6]
    anyio.run(main, url, namespace, name, kind, store_arg, backend=(sys.argv[6:] or ["asyncio"])[0])
