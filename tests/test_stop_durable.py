"""Durable STOP: a STOPped trace stays STOPped across restarts and across workers sharing a database.

Unit level: ``StopTombstones`` with each durable backend (SQLite and Postgres
registry stores and Engrams) — persisted, loaded by a fresh instance, expired
after ``ttl_s``, bounded to ``max_entries``.  Process level: a worker process
on NATS is SIGKILLed after a STOP and restarted, and a second worker process
starts on the same database; both refuse the trace's TASKs (addressed and
capability-routed) while still answering others.  The orchestrator keeps no
store, so the tombstones the workers find were written by the worker that saw
the STOP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from nats_util import Inbox, nats_server_binary
from nats_worker import WorkerProcess as Worker

from cosmonapse import Dendrite, SignalType
from cosmonapse.engram.postgres import PostgresEngram
from cosmonapse.engram.sqlite import SqliteEngram
from cosmonapse.registry.memory import MemoryRegistryStore
from cosmonapse.registry.postgres import PostgresRegistryStore
from cosmonapse.registry.sqlite import SqliteRegistryStore
from cosmonapse.stops import StopLedger, StopTombstones, find_ledger
from cosmonapse.synapse.nats import NatsSynapse

pytestmark = pytest.mark.anyio


def make_ledger(kind: str, tmp_path: Path, dsn: str | None) -> Any:
    if kind == "sqlite-registry":
        return SqliteRegistryStore(str(tmp_path / "reg.db"))
    if kind == "sqlite-engram":
        return SqliteEngram(str(tmp_path / "mem.db"), engram_id="m")
    assert dsn is not None
    if kind == "postgres-registry":
        return PostgresRegistryStore(dsn)
    return PostgresEngram(dsn, engram_id="m")


@pytest.fixture(params=["sqlite-registry", "sqlite-engram", "postgres-registry", "postgres-engram"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    dsn = request.getfixturevalue("postgres_dsn") if request.param.startswith("postgres") else None
    store = make_ledger(request.param, tmp_path, dsn)
    try:
        yield store
    finally:
        await store.close()


async def test_tombstones_survive_a_new_instance_and_keep_the_bounded_ttl_policy(ledger: Any) -> None:
    assert isinstance(ledger, StopLedger)
    first = StopTombstones(max_entries=3, ttl_s=60)
    first.ledger = ledger
    for n in range(5):
        first.add(f"t{n}")
        await first.persist(f"t{n}")
    short = StopTombstones(ttl_s=0.05)
    short.ledger = ledger
    short.add("brief")
    await short.persist("brief")
    # A new process: nothing in memory until it loads.
    fresh = StopTombstones(max_entries=3, ttl_s=60)
    fresh.ledger = ledger
    assert "t4" not in fresh
    assert await fresh.load() == 3  # bounded: the newest three of the long ones
    assert {"t2", "t3", "t4"} <= {t for t in ("t0", "t1", "t2", "t3", "t4") if t in fresh}
    assert "t0" not in fresh and "t1" not in fresh


async def test_expired_tombstones_are_not_loaded(ledger: Any) -> None:
    short = StopTombstones(ttl_s=0.2)
    short.ledger = ledger
    short.add("brief")
    await short.persist("brief")
    with anyio.fail_after(5):
        while True:
            fresh = StopTombstones()
            fresh.ledger = ledger
            if await fresh.load() == 0:
                break
            await anyio.sleep(0.05)  # allowed: waiting for wall-clock expiry, bounded above
    assert "brief" not in fresh


def test_which_backend_keeps_the_tombstones(tmp_path: Path) -> None:
    sqlite = SqliteRegistryStore(str(tmp_path / "r.db"))
    engram = SqliteEngram(str(tmp_path / "e.db"), engram_id="e")
    assert find_ledger(MemoryRegistryStore(), engram) is engram  # memory keeps nothing durable
    assert find_ledger(sqlite, engram) is sqlite  # the registry store first
    assert find_ledger(None) is None


async def test_a_persist_that_fails_is_logged_and_the_stop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        async def remember_stop(self, trace_id: str, ttl_s: float, max_entries: int) -> None:
            raise OSError("disk on fire")

        async def load_stops(self, max_entries: int) -> list[tuple[str, float]]:
            return []

    tombstones = StopTombstones()
    tombstones.ledger = Broken()
    tombstones.add("x")
    await tombstones.persist("x")
    assert "x" in tombstones
    assert "kept in memory only" in caplog.text and "disk on fire" in caplog.text


# -- worker processes -------------------------------------------------------------------------


async def refuses(orch: Dendrite, name: str, trace: str) -> None:
    """TASKs of *trace* (addressed and routed) get nothing; a TASK on a fresh trace after them runs first."""
    stopped = await orch.dispatch(neuron=f"echo-{name}", input={}, trace_id=trace)
    routed = await orch.dispatch_task(capabilities=[f"echo-{name}"], input={}, trace_id=trace)
    assert routed.trace_id == trace
    control = await orch.dispatch_and_wait(neuron=f"echo-{name}", input={}, timeout_s=10)
    assert control.payload["output"]["calls"] == 1  # the STOPped TASKs before it never ran
    control = await orch.dispatch_and_wait(capabilities=[f"echo-{name}"], input={}, timeout_s=10)
    assert control.payload["output"]["calls"] == 2
    with anyio.move_on_after(0.5):
        got = await stopped.wait(timeout_s=None)
        pytest.fail(f"the STOPped trace was answered: {got}")
    stopped._close_now()


@pytest.mark.slow
@pytest.mark.skipif(nats_server_binary() is None, reason="nats-server not installed")
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_restarted_worker_and_a_new_one_refuse_a_stopped_trace(
    nats_url: str, kind: str, tmp_path: Path, request: pytest.FixtureRequest, anyio_backend: str
) -> None:
    store = str(tmp_path / "shared.db") if kind == "sqlite" else request.getfixturevalue("postgres_dsn")
    ns = f"durable{kind}{anyio_backend}"
    other = "trio" if anyio_backend == "asyncio" else "asyncio"
    first = Worker(nats_url, ns, "a", kind, store, other)
    restarted = Worker(nats_url, ns, "a", kind, store, anyio_backend)
    second = Worker(nats_url, ns, "b", kind, store, other)
    async with NatsSynapse(nats_url) as osyn:
        registers = Inbox()
        await osyn.subscribe(f"cosmonapse.{ns}.REGISTER", registers)
        await osyn.flush()
        try:
            await first.start(registers)
            async with Dendrite(synapse=osyn, namespace=ns, heartbeat_s=0) as orch:
                pw = await orch.dispatch(neuron="hold-a", input={})
                trace = pw.trace_id
                started = await pw.wait_for(SignalType.THOUGHT_DELTA, timeout_s=10)
                assert started.payload
                acks = await orch.stop_trace(trace, collect_acks=True, timeout_s=3)
                (ack,) = [a for a in acks if str(a.payload["node"]).startswith("a-")]
                assert ack.payload["cancelled"] == 1  # the worker stored the tombstone before this ack
            await first.kill()
            await restarted.start(registers)
            await second.start(registers)
            # A fresh orchestrator: it never saw the STOP, so it sends the trace's TASKs.
            async with Dendrite(synapse=osyn, namespace=ns, dendrite_id="orch-2", heartbeat_s=0) as orch2:
                await refuses(orch2, "a", trace)
                await refuses(orch2, "b", trace)
        finally:
            for worker in (first, restarted, second):
                await worker.stop()
