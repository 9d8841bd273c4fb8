"""Registry stores, the presence mirror and the liveness sweep (§7.4, §21)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from cosmonapse import (
    Axon,
    Dendrite,
    DendriteProtocolError,
    Directed,
    InMemoryEngram,
    MemoryRegistryStore,
    MemorySynapse,
    NeuronContext,
    NeuronRecord,
    PostgresRegistryStore,
    RegistryStore,
    Signal,
    SignalType,
    SqliteRegistryStore,
)
from cosmonapse.testing.harness import SignalRecorder

pytestmark = pytest.mark.anyio
T = SignalType
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RegistryStore]:
    if request.param == "postgres":
        s: RegistryStore = PostgresRegistryStore(request.getfixturevalue("postgres_dsn"))
    elif request.param == "sqlite":
        s = SqliteRegistryStore(str(tmp_path / "r.db"))
    else:
        s = MemoryRegistryStore()
    await s.connect()
    yield s
    await s.close()


async def test_store_semantics(store: RegistryStore) -> None:
    assert isinstance(store, RegistryStore)
    await store.upsert(NeuronRecord("a", ["y", "x"], "1", registered_at=T0, last_heartbeat=T0))
    await store.upsert(NeuronRecord("a", ["x"], "2", registered_at=T0 + timedelta(hours=1)))
    a = await store.get("a")
    assert a is not None and (a.capabilities, a.version, a.registered_at) == (
        ["x"],
        "2",
        T0,
    )  # first seen kept
    await store.touch_heartbeat("a", T0 + timedelta(minutes=5), status="ok")
    a = await store.get("a")
    assert a is not None and a.status == "registered" and a.last_heartbeat == T0 + timedelta(minutes=5)
    await store.touch_heartbeat("thin", T0)  # unknown: a thin record
    assert (await store.get("thin")) == NeuronRecord("thin", [], None, "registered", T0, T0)
    await store.mark_deregistered("a")
    await store.mark_deregistered("nobody")
    await store.touch_heartbeat("a", T0 + timedelta(hours=2))  # never resurrects
    a = await store.get("a")
    assert a is not None and a.status == "deregistered" and a.last_heartbeat == T0 + timedelta(minutes=5)
    assert [r.neuron_id for r in await store.records()] == ["thin"]
    assert [r.neuron_id for r in await store.records(include_deregistered=True)] == ["a", "thin"]
    await store.upsert(NeuronRecord("b", ["x"], registered_at=T0 + timedelta(hours=3)))
    assert [r.neuron_id for r in await store.records(capability="x")] == ["b"]
    stale = await store.mark_stale(T0 + timedelta(hours=1), keep=frozenset())
    assert stale == ["thin"]
    assert await store.mark_stale(T0 + timedelta(days=1), keep=frozenset({"b"})) == []
    assert NeuronRecord.from_dict(NeuronRecord("c", ["z"]).to_dict()).neuron_id == "c"


async def test_sqlite_store_persists(tmp_path: Path) -> None:
    path = str(tmp_path / "reg.db")
    first = SqliteRegistryStore(path)
    await first.upsert(NeuronRecord("kept", ["c"], registered_at=T0))
    await first.close()
    second = SqliteRegistryStore(path)
    try:
        (rec,) = await second.records()
        assert (rec.neuron_id, rec.capabilities, rec.registered_at) == ("kept", ["c"], T0)
    finally:
        await second.close()


async def until(d: Dendrite, check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    """Wait until *check()* holds, re-checking after each refresh of *d*'s registry."""
    changed = anyio.Event()

    def refreshed() -> None:
        changed.set()

    d.on_refresh(refreshed)
    with anyio.fail_after(timeout_s):
        while not await check():
            await changed.wait()
            changed = anyio.Event()


async def echo(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
    return input


def worker(bus: MemorySynapse, name: str, caps: tuple[str, ...] = (), **kw: Any) -> Dendrite:
    d = Dendrite(synapse=bus, namespace="reg", role="worker", dendrite_id=f"host-{name}", **kw)
    d.attach_axon(Axon(neuron_id=name, neuron_fn=echo, capabilities=caps))
    return d


async def status(d: Dendrite, neuron_id: str) -> str | None:
    rec = await d.registry_store.get(neuron_id)
    return rec.status if rec is not None else None


async def test_mirror_heartbeats_keep_status_and_stop_deregisters(store: RegistryStore) -> None:
    async with MemorySynapse() as bus:
        orch = Dendrite(synapse=bus, namespace="reg", registry_store=store, heartbeat_s=0)
        beats = SignalRecorder()
        orch.on_heartbeat_signal(beats)
        async with orch:
            w = worker(bus, "alpha", ("sum",), heartbeat_s=0.02)
            async with w:
                await beats.wait_for(count=2)
                await until(orch, lambda: _seen_heartbeat(orch, "alpha"))
                (rec,) = await orch.find_neurons(capability="sum")
                assert rec.neuron_id == "alpha" and rec.status == "registered"  # not the reference's "ok"
                assert await orch.find_neurons(capability="nope") == []
            await until(orch, lambda: _is(orch, "alpha", "deregistered"))
            assert await orch.find_neurons() == []
            assert [r.neuron_id for r in await orch.registry_snapshot(include_deregistered=True)] == ["alpha"]
            # a late HEARTBEAT does not bring it back; a REGISTER does
            await bus.publish("cosmonapse.reg.HEARTBEAT", Signal(type=T.HEARTBEAT, directed=Directed("alpha"),
                                                                 payload={"status": "ok"}))  # fmt: skip
            await until(orch, lambda: _is(orch, "alpha", "deregistered"))
            register = Axon(neuron_id="alpha", neuron_fn=echo).register_signal()
            await bus.publish("cosmonapse.reg.REGISTER", register)
            await until(orch, lambda: _is(orch, "alpha", "registered"))


async def _is(d: Dendrite, neuron_id: str, wanted: str) -> bool:
    return await status(d, neuron_id) == wanted


async def _seen_heartbeat(d: Dendrite, neuron_id: str) -> bool:
    rec = await d.registry_store.get(neuron_id)
    return rec is not None and rec.last_heartbeat is not None and rec.last_heartbeat > rec.registered_at


async def test_the_sweep_runs_on_an_orchestrator_and_marks_the_silent_ones() -> None:
    store = MemoryRegistryStore()
    async with MemorySynapse() as bus:
        orch = Dendrite(
            synapse=bus, namespace="reg", registry_store=store, heartbeat_s=30, stale_after_s=0.15
        )
        async with orch, worker(bus, "silent", heartbeat_s=0), worker(bus, "lively", heartbeat_s=0.03):
            await until(orch, lambda: _is(orch, "silent", "registered"))
            await until(orch, lambda: _is(orch, "silent", "deregistered"))  # no heartbeat: swept
            assert await status(orch, "lively") == "registered"
            assert [r.neuron_id for r in await orch.find_neurons()] == ["lively"]
    assert orch.effective_stale_after_s == 0.15
    assert Dendrite(synapse=bus, heartbeat_s=10).effective_stale_after_s == 30
    assert Dendrite(synapse=bus, heartbeat_s=0).effective_stale_after_s == 0


async def test_own_axons_are_never_swept_and_are_deregistered_on_stop() -> None:
    store = MemoryRegistryStore()
    async with MemorySynapse() as bus:
        host = worker(bus, "mine", registry_store=store, heartbeat_s=0, stale_after_s=0.05)
        async with host:
            await until(host, lambda: _is(host, "mine", "registered"))
            assert await host.sweep_registry() == []
            await store.upsert(NeuronRecord("ghost", registered_at=T0))
            assert await host.sweep_registry() == ["ghost"]
        assert await status(host, "mine") == "deregistered"


async def test_engrams_are_not_neurons() -> None:
    store = MemoryRegistryStore()
    async with MemorySynapse() as bus:
        orch = Dendrite(synapse=bus, namespace="reg", registry_store=store, heartbeat_s=0)
        registers = SignalRecorder()
        orch.on_register_signal(registers)
        keeper = Dendrite(synapse=bus, namespace="reg", role="worker", dendrite_id="keeper")
        keeper.attach_engram(InMemoryEngram("notes"))
        async with orch, keeper, worker(bus, "real"):
            await registers.wait_for(lambda s: {x.neuron for x in s} >= {"notes", "real"})
            await until(orch, lambda: _is(orch, "real", "registered"))
            assert [r.neuron_id for r in await orch.find_neurons()] == ["real"]


async def test_capability_filters_consult_the_store() -> None:
    store = MemoryRegistryStore()
    await store.upsert(NeuronRecord("remote", ["translate"]))  # known only from the store
    async with MemorySynapse() as bus:
        orch = Dendrite(synapse=bus, namespace="reg", registry_store=store, heartbeat_s=0)
        got = SignalRecorder()
        orch.on_agent_output(capability="translate")(got)
        async with orch:
            await until(orch, lambda: _caps_loaded(orch))
            for neuron in ("someone-else", "remote"):
                out = Signal(type=T.AGENT_OUTPUT, directed=Directed(neuron), payload={"output": {}})
                await bus.publish("cosmonapse.reg.AGENT_OUTPUT", out)
            await got.wait_for(count=1)
    assert [s.neuron for s in got.signals] == ["remote"]


async def _caps_loaded(d: Dendrite) -> bool:
    return "remote" in d._registry.peer_caps


async def test_reads_need_a_store_and_max_age_filters() -> None:
    store = MemoryRegistryStore()
    await store.upsert(NeuronRecord("old", registered_at=T0))
    async with MemorySynapse() as bus:
        bare = Dendrite(synapse=bus, namespace="reg")
        with pytest.raises(DendriteProtocolError):
            await bare.find_neurons()
        d = Dendrite(synapse=bus, namespace="reg", registry_store=store, heartbeat_s=0)
        assert [r.neuron_id for r in await d.find_neurons()] == ["old"]
        assert await d.find_neurons(max_age_s=60) == []
