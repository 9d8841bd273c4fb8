"""Deadlines are deadlines, and a call that gives up STOPs what it started (issue 9, item 6).

* ``dispatch_and_wait(timeout_s=...)`` ends within its timeout plus a small
  slack (``GIVE_UP_GRACE_S`` for the STOP, plus scheduling), even while the bus
  cannot take the TASK (an outage, full buffers);
* an async ``dispatch_and_wait`` that times out or is cancelled STOPs its trace
  (the worker's Neuron is cancelled), as the sync facade does; so does
  ``run_with_retry`` when it gives up on a trace it minted;
* a STOP the bus cannot take in time is sent as soon as it can.

On memory, cosmo:// and NATS, asyncio and trio.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from bus_kit import KINDS, NETWORK
from core_kit import pair
from devbus_util import ServerInTask
from nats_util import NatsServer

from cosmonapse import (
    Axon,
    Dendrite,
    DispatchTimeout,
    MemorySynapse,
    NeuronContext,
    RetryStrategy,
    Signal,
    SignalType,
    Synapse,
)
from cosmonapse.stops import GIVE_UP_GRACE_S, StopTombstones
from cosmonapse.synapse.dev import DevSynapse
from cosmonapse.synapse.nats import NatsSynapse

pytestmark = pytest.mark.anyio
T = SignalType
#: What a deadline may overrun by in these tests: the STOP's grace plus generous scheduling
#: room on a loaded machine (the bus's own publish timeout, 5 s, is what it must not take).
SLACK_S = GIVE_UP_GRACE_S + 1.0


class Blocker:
    """A Neuron that runs until cancelled; events to wait on, per trace."""

    def __init__(self) -> None:
        self.started: dict[str, anyio.Event] = {}
        self.cancelled: dict[str, anyio.Event] = {}

    def _event(self, table: dict[str, anyio.Event], trace: str) -> anyio.Event:
        return table.setdefault(trace, anyio.Event())

    async def __call__(self, input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        self._event(self.started, ctx.trace_id).set()
        try:
            await anyio.sleep_forever()
        finally:
            self._event(self.cancelled, ctx.trace_id).set()
        return {}  # pragma: no cover

    async def wait_cancelled(self, trace: str) -> None:
        with anyio.fail_after(10):
            await self._event(self.cancelled, trace).wait()


def trace_of(exc: BaseException) -> str:
    return str(exc).split("trace ", 1)[1].split(",")[0].split(")")[0]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_call_that_times_out_stops_its_trace(kind: str, nats_url: str | None) -> None:
    blocker = Blocker()
    async with pair(kind, nats_url, "giveup1", [Axon("block", blocker)]) as p:
        t0 = time.monotonic()
        with pytest.raises(DispatchTimeout) as caught:
            await p.orch.dispatch_and_wait(neuron="block", input={}, timeout_s=0.3)
        assert time.monotonic() - t0 < 0.3 + SLACK_S
        trace = trace_of(caught.value)
        await blocker.wait_cancelled(trace)  # the worker's Neuron was cancelled by the STOP
        assert p.orch.is_stopped(trace)
        stops = await p.seen.wait_for(lambda s: any(x.type is T.STOP and x.trace_id == trace for x in s))
        stop = next(x for x in stops if x.type is T.STOP and x.trace_id == trace)
        assert stop.payload == {"rollback": False, "reason": "dispatch_and_wait timed out"}
        acks = await p.seen.wait_for(lambda s: any(x.type is T.STOPPED and x.trace_id == trace for x in s))
        ack = next(x for x in acks if x.type is T.STOPPED and x.trace_id == trace)
        assert ack.payload["node"] == "worker" and ack.payload["cancelled"] == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_a_cancelled_call_stops_its_trace(kind: str, nats_url: str | None) -> None:
    blocker = Blocker()
    async with pair(kind, nats_url, "giveup2", [Axon("block", blocker)]) as p:
        trace = "trc_" + "C" * 26
        with anyio.move_on_after(5) as outer:  # the caller gives up: cancelled, not timed out
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    await p.orch.dispatch_and_wait(neuron="block", input={}, timeout_s=None, trace_id=trace)

                tg.start_soon(call)
                with anyio.fail_after(10):
                    await blocker._event(blocker.started, trace).wait()
                tg.cancel_scope.cancel()
        assert not outer.cancelled_caught
        await blocker.wait_cancelled(trace)
        await p.seen.wait_for(lambda s: any(x.type is T.STOP and x.trace_id == trace for x in s))
        stops = [s for s in p.seen.signals if s.type is T.STOP and s.trace_id == trace]
        assert [s.payload["reason"] for s in stops] == ["the caller gave up on dispatch_and_wait"]


@pytest.mark.parametrize("kind", KINDS)
async def test_retry_stops_every_trace_it_gives_up_on(kind: str, nats_url: str | None) -> None:
    blocker = Blocker()
    async with pair(kind, nats_url, "giveup3", [Axon("block", blocker)]) as p:
        # fresh trace per attempt: each abandoned attempt is STOPped
        with pytest.raises(DispatchTimeout):
            await p.orch.run_with_retry(
                neuron="block", input={}, retry=RetryStrategy(max_attempts=2, timeout_s=0.2)
            )
        traces = {s.trace_id for s in p.seen.signals if s.type is T.TASK}
        assert len(traces) == 2
        for trace in traces:
            await blocker.wait_cancelled(trace)
        # one trace for every attempt: it is STOPped once the loop gives up on it
        with pytest.raises(DispatchTimeout):
            await p.orch.run_with_retry(
                neuron="block", input={}, retry=RetryStrategy(max_attempts=2, timeout_s=0.2, new_trace=False)
            )
        shared = {s.trace_id for s in p.seen.signals if s.type is T.TASK} - traces
        assert len(shared) == 1
        await blocker.wait_cancelled(shared.pop())


async def test_the_facade_path_sends_one_stop_and_waits_for_its_ack() -> None:
    """The sync facade hands its own give-up to the same path: one STOP, acknowledged."""
    blocker = Blocker()
    async with pair("memory", None, "giveup4", [Axon("block", blocker)]) as p:
        acked: list[Signal | None] = []

        async def give_up(trace: str, reason: str) -> None:
            acked.append(await p.orch.stop_and_confirm(trace, reason=reason, timeout_s=5))

        with pytest.raises(DispatchTimeout) as caught:
            await p.orch._dispatch_and_wait_giving_up(give_up, neuron="block", input={}, timeout_s=0.2)
        trace = trace_of(caught.value)
        assert len(acked) == 1 and acked[0] is not None and acked[0].payload["cancelled"] == 1
        await blocker.wait_cancelled(trace)
        assert len([s for s in p.seen.signals if s.type is T.STOP and s.trace_id == trace]) == 1


# -- outages ----------------------------------------------------------------------------------


@asynccontextmanager
async def outage_bus(kind: str) -> AsyncIterator[tuple[Any, Any]]:
    """A bus we can take away and bring back: yields (make_synapse, bus) for cosmo:// or NATS."""
    if kind == "cosmo":
        async with anyio.create_task_group() as tg:
            bus = ServerInTask(tg)
            srv = await bus.start()
            port = srv.port

            class Dev:
                async def down(self) -> None:
                    await bus.stop()

                async def up(self) -> None:
                    await bus.start(port=port)

            def make(delay: float = 0.01) -> DevSynapse:
                return DevSynapse(srv.url, reconnect_delay=delay, reconnect_max_delay=delay * 2)

            yield make, Dev()
            await bus.stop()
    else:
        nats = NatsServer()
        await anyio.to_thread.run_sync(nats.start)
        try:

            class Nats:
                async def down(self) -> None:
                    await anyio.to_thread.run_sync(nats.kill)

                async def up(self) -> None:
                    await anyio.to_thread.run_sync(nats.start)

            def make(delay: float = 0.01) -> NatsSynapse:
                return NatsSynapse(nats.url, reconnect_wait=delay, max_reconnect_wait=delay * 2)

            yield make, Nats()
        finally:
            await anyio.to_thread.run_sync(nats.stop)


@pytest.mark.parametrize("kind", NETWORK)
async def test_calls_keep_their_deadline_while_the_bus_is_down(kind: str) -> None:
    """The bus's publish timeout is 5 s; a 0.5 s call must not wait for it, nor for the STOP."""
    async with outage_bus(kind) as (make, bus):
        syn: Synapse = make()
        async with syn, Dendrite(synapse=syn, namespace="outage", dendrite_id="orch", heartbeat_s=0) as orch:
            await bus.down()
            for _ in range(3):  # the first may still find the dying connection writable
                t0 = time.monotonic()
                with pytest.raises(DispatchTimeout):
                    await orch.dispatch_and_wait(neuron="nobody", input={}, timeout_s=0.5)
                assert time.monotonic() - t0 < 0.5 + SLACK_S
            t0 = time.monotonic()
            assert await orch.stop_trace("trc_" + "D" * 26, collect_acks=True, timeout_s=0.5) == []
            assert time.monotonic() - t0 < 0.5 + SLACK_S
            await bus.up()


async def test_a_call_keeps_its_deadline_when_the_bus_will_not_take_its_task() -> None:
    """In-process, the 'outage' is backpressure: a worker that reads nothing fills its buffer."""
    release = anyio.Event()

    async def hold(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        await release.wait()
        return {}

    async with MemorySynapse(subscription_buffer=1) as bus:
        worker = Dendrite(
            synapse=bus,
            namespace="full",
            role="worker",
            dendrite_id="w",
            heartbeat_s=0,
            max_concurrent_tasks=1,
        )
        worker.attach_axon(Axon("hold", hold))
        orch = Dendrite(synapse=bus, namespace="full", dendrite_id="orch", heartbeat_s=0)
        async with worker, orch:
            for _ in range(2):  # one runs, one waits in the router, one fills the buffer
                await orch.dispatch_task(neuron="hold", input={})
            await orch.dispatch_task(neuron="hold", input={})
            t0 = time.monotonic()
            with pytest.raises(DispatchTimeout, match=r"was not published within 0\.3 s"):
                await orch.dispatch_and_wait(neuron="hold", input={}, timeout_s=0.3)
            assert time.monotonic() - t0 < 0.3 + SLACK_S
            release.set()


async def test_a_stop_the_bus_could_not_take_is_sent_when_it_is_back() -> None:
    """The TASK went out, then the bus went away: the call gives up on time, and its STOP
    reaches the worker once the bus is back (sent from the priority lane).  The worker
    reconnects well before the orchestrator (delays 0.01 s vs 0.5 s), so it is listening
    again when the late STOP goes out (the bus keeps nothing for absent subscribers)."""
    blocker = Blocker()
    async with outage_bus("cosmo") as (make, bus):
        worker_bus, orch_bus = make(0.01), make(0.5)
        async with worker_bus, orch_bus:
            worker = Dendrite(
                synapse=worker_bus, namespace="late", role="worker", dendrite_id="w", heartbeat_s=0
            )
            worker.attach_axon(Axon("block", blocker))
            orch = Dendrite(synapse=orch_bus, namespace="late", dendrite_id="orch", heartbeat_s=0)
            async with worker, orch:
                trace = "trc_" + "L" * 26
                async with anyio.create_task_group() as tg:

                    async def call() -> None:
                        with pytest.raises(DispatchTimeout):
                            await orch.dispatch_and_wait(
                                neuron="block", input={}, timeout_s=1.0, trace_id=trace
                            )

                    tg.start_soon(call)
                    with anyio.fail_after(10):
                        await blocker._event(blocker.started, trace).wait()
                    await bus.down()
                assert not blocker._event(blocker.cancelled, trace).is_set()
                back = anyio.Event()
                worker_bus.add_reconnect_callback(back.set)  # called once its subscriptions are back
                await bus.up()
                with anyio.fail_after(10):
                    await back.wait()
                await blocker.wait_cancelled(trace)  # the late STOP arrived
                assert worker.is_stopped(trace)


class SlowLedger:
    """A tombstone store (``StopLedger``) whose writes wait until released."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.stored: list[str] = []

    async def remember_stop(self, trace_id: str, ttl_s: float, max_entries: int) -> None:
        await self.release.wait()
        self.stored.append(trace_id)

    async def load_stops(self, max_entries: int) -> list[tuple[str, float]]:
        return []


async def test_a_slow_tombstone_store_does_not_stretch_a_call_that_gives_up() -> None:
    """Durable STOP writes the tombstone before the STOP is published; for a call that
    gives up that write counts against its grace: a database too slow for it hands the
    write and the STOP to the priority lane (written first, then published)."""
    blocker = Blocker()
    ledger = SlowLedger()
    async with pair("memory", None, "giveup-ledger", [Axon("block", blocker)]) as p:
        tombstones = p.orch._core.tombstones
        assert isinstance(tombstones, StopTombstones)
        tombstones.ledger = ledger
        t0 = time.monotonic()
        with pytest.raises(DispatchTimeout) as caught:
            await p.orch.dispatch_and_wait(neuron="block", input={}, timeout_s=0.3)
        assert time.monotonic() - t0 < 0.3 + SLACK_S
        trace = trace_of(caught.value)
        assert p.orch.is_stopped(trace)  # refused here at once
        marker = Signal(type=T.AUDIT, trace_id="trc_" + "S" * 26, payload={"marker": True})
        await p.orch.emit(marker)  # one publisher's order: a STOP sent before it is seen before it
        await p.seen.wait_for(lambda seen: any(x.id == marker.id for x in seen))
        assert not [s for s in p.seen.trace(trace) if s.type is T.STOP]  # not before it is stored
        ledger.release.set()
        await blocker.wait_cancelled(trace)  # then the STOP went out and landed
        assert ledger.stored == [trace]


async def test_stop_trace_with_a_slow_tombstone_store_keeps_its_deadline() -> None:
    """``stop_trace(collect_acks=True, timeout_s=...)`` stores the tombstone, publishes the
    STOP and waits for acks, all within *timeout_s*; the STOP is never published before
    its tombstone is stored."""
    blocker = Blocker()
    ledger = SlowLedger()
    async with pair("memory", None, "stop-ledger", [Axon("block", blocker)]) as p:
        tombstones = p.orch._core.tombstones
        assert isinstance(tombstones, StopTombstones)
        tombstones.ledger = ledger
        task = await p.orch.dispatch_task(neuron="block", input={})
        with anyio.fail_after(10):
            await blocker._event(blocker.started, task.trace_id).wait()
        t0 = time.monotonic()
        acks = await p.orch.stop_trace(task.trace_id, collect_acks=True, timeout_s=0.3)
        assert acks == [] and time.monotonic() - t0 < 0.3 + SLACK_S
        marker = Signal(type=T.AUDIT, trace_id="trc_" + "T" * 26, payload={"marker": True})
        await p.orch.emit(marker)
        await p.seen.wait_for(lambda seen: any(x.id == marker.id for x in seen))
        assert not [s for s in p.seen.trace(task.trace_id) if s.type is T.STOP]
        assert not blocker._event(blocker.cancelled, task.trace_id).is_set()
        ledger.release.set()
        await blocker.wait_cancelled(task.trace_id)
        assert ledger.stored == [task.trace_id]
