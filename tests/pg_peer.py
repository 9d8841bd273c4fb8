"""A second (third, ...) OS process sharing one PostgreSQL database with the tests.

    python pg_peer.py engram   DSN NAME BACKEND   # writes, then (after "go") settles every trace
    python pg_peer.py sweep    DSN NAME BACKEND   # after "go": one registry sweep
    python pg_peer.py worker   DSN NAME BACKEND   # a worker Dendrite mirroring itself into the registry

It talks on stdin/stdout, one JSON object per line: it prints ``{"ready": ...}``
when its first phase is done, waits for a line on stdin (the barrier, so every
process starts the next phase together), then prints its result.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.to_thread

from cosmonapse import Axon, Dendrite, MemorySynapse, NeuronContext, PostgresEngram, PostgresRegistryStore

KEYS = 3
TRACES = 60
SHARED_IMPRINTS = 20


def say(**data: Any) -> None:
    print(json.dumps(data), flush=True)


async def barrier() -> None:
    await anyio.to_thread.run_sync(sys.stdin.readline)


async def engram(dsn: str, name: str) -> None:
    """Phase 1: TRACES writes (trace i writes key i % KEYS) plus the shared idempotent appends.
    Phase 2: roll back every odd trace and commit every even one, of *every* process."""
    async with PostgresEngram(dsn, "shared") as e:
        writes = []
        for i in range(TRACES):
            trace = f"trc_{name}_{i}"
            r = await e.imprint("upsert", {"content": trace}, merge_key=f"k{i % KEYS}", trace_id=trace)
            writes.append({"trace": trace, "key": f"k{i % KEYS}", "version": r.version})
            if i < SHARED_IMPRINTS:  # the same imprint ids in every process: one write each
                await e.imprint("append", {"content": i, "tags": ["shared"]}, imprint_id=f"imp_shared_{i}")
        say(ready=writes)
        names = json.loads(await anyio.to_thread.run_sync(sys.stdin.readline))
        reports = []
        for i in range(TRACES):
            for who in names:
                trace = f"trc_{who}_{i}"
                if i % 2:
                    report = await e.compensate(trace)
                    reports.append(
                        {"trace": trace, "restored": report.restored, "conflicts": report.conflicted}
                    )
                else:
                    await e.commit(trace)
        say(reports=reports)


async def sweep(dsn: str, name: str) -> None:
    store = PostgresRegistryStore(dsn)
    await store.connect()
    say(ready=True)
    await barrier()
    stale = await store.mark_stale(datetime.now(UTC))
    await store.close()
    say(stale=stale)


async def echo(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
    return input


async def worker(dsn: str, name: str) -> None:
    """A worker on its own bus (another machine): it is in the shared registry while it heartbeats."""
    store = PostgresRegistryStore(dsn)
    async with MemorySynapse() as bus:
        d = Dendrite(synapse=bus, namespace="pg", role="worker", dendrite_id=name, registry_store=store,
                     heartbeat_s=0.1, stale_after_s=0)  # fmt: skip
        d.attach_axon(Axon(neuron_id=name, neuron_fn=echo, capabilities=["remote"]))
        changed = anyio.Event()

        def refreshed() -> None:
            changed.set()

        d.on_refresh(refreshed)
        async with d:
            while (await store.get(name)) is None:
                await changed.wait()
                changed = anyio.Event()
            say(ready=True)
            await barrier()  # killed before this returns, in the test that uses it
    await store.close()


def main() -> None:
    role, dsn, name, backend = sys.argv[1:5]
    run = {"engram": engram, "sweep": sweep, "worker": worker}[role]
    anyio.run(run, dsn, name, backend=backend)


if __name__ == "__main__":
    main()
