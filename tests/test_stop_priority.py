"""STOP is never behind data, for every role (issue 9, "STOP has priority", the core's part).

* A worker whose job pool is saturated (its handlers are stuck) still applies
  every STOP at once and answers STOPPED: the STOP route never waits for the job
  pool — settlement and STOPPED run in the core's priority lane, and an
  ``on_stop`` handler waits for a runner without holding up the next STOP.
* An orchestrator that hosts Axons reads every type but TASK through one feed;
  STOP and STOPPED come through a subscription of their own, so a backlog on the
  feed (a flood behind a stuck handler) does not hold up the STOP of the TASK it
  runs, nor the STOPPED acks it waits for.

On memory, cosmo:// and NATS, asyncio and trio.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
from bus_kit import KINDS
from core_kit import pair

from cosmonapse import Axon, NeuronContext, Signal, SignalType

pytestmark = pytest.mark.anyio
T = SignalType


class Holds:
    """A Neuron that runs until cancelled; one started/cancelled event per trace."""

    def __init__(self) -> None:
        self.started: dict[str, anyio.Event] = {}
        self.cancelled: dict[str, anyio.Event] = {}

    def event(self, table: dict[str, anyio.Event], trace: str) -> anyio.Event:
        return table.setdefault(trace, anyio.Event())

    async def __call__(self, input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        self.event(self.started, ctx.trace_id).set()
        try:
            await anyio.sleep_forever()
        finally:
            self.event(self.cancelled, ctx.trace_id).set()
        return {}  # pragma: no cover


@pytest.mark.parametrize("kind", KINDS)
async def test_stops_are_applied_and_acknowledged_while_the_job_pool_is_full(
    kind: str, nats_url: str | None
) -> None:
    holds = Holds()
    stuck = anyio.Event()
    on_stop_calls: list[str] = []
    async with pair(
        kind, nats_url, "prio1", [Axon("hold", holds)], worker_kw={"max_concurrent_handlers": 1}
    ) as p:

        @p.worker.on_audit
        async def wedged(sig: Signal) -> None:  # takes the only handler runner and keeps it
            stuck.set()
            await anyio.sleep_forever()

        @p.worker.on_stop
        def seen(sig: Signal) -> None:  # needs a runner too: must not hold up the next STOP
            on_stop_calls.append(sig.trace_id)

        await p.subscribed()
        await p.orch.emit(Signal(type=T.AUDIT, payload={}))
        await p.orch.emit(Signal(type=T.AUDIT, payload={}))  # queued behind the first
        with anyio.fail_after(10):
            await stuck.wait()
        traces = []
        for _ in range(3):
            task = await p.orch.dispatch_task(neuron="hold", input={})
            with anyio.fail_after(10):
                await holds.event(holds.started, task.trace_id).wait()
            traces.append(task.trace_id)
        with anyio.fail_after(10):
            for trace in traces:
                ack = await p.orch.stop_and_confirm(trace, timeout_s=10)
                assert ack is not None and ack.payload["cancelled"] == 1, trace
                await holds.event(holds.cancelled, trace).wait()
        assert on_stop_calls == []  # still waiting for the wedged handler's runner


@pytest.mark.parametrize("kind", KINDS)
async def test_an_orchestrator_hosting_axons_gets_its_stop_past_a_feed_backlog(
    kind: str, nats_url: str | None
) -> None:
    holds = Holds()
    stuck = anyio.Event()
    # "orch" hosts the Axon and is the one with the backlog; "worker" is the peer that STOPs.
    async with pair(
        kind,
        nats_url,
        "prio2",
        [],
        orch_kw={"max_concurrent_handlers": 1},
        orch_axons=[Axon("hold", holds)],
    ) as p:
        host = p.orch

        @host.on_thought_delta
        async def wedged(sig: Signal) -> None:  # the feed's pump waits behind this handler
            stuck.set()
            await anyio.sleep_forever()

        await p.subscribed()
        async with anyio.create_task_group() as tg:
            # a backlog on the host's feed: deltas published by another connection, forever
            tg.start_soon(flood_from, p.worker_bus, "prio2", 3000)
            feed = host._core._subs[("feed", None)]
            with anyio.fail_after(10):
                await stuck.wait()
                while feed.pending < 1000:  # a real backlog (memory: the buffer is full)
                    await anyio.lowlevel.checkpoint()
            task = await host.dispatch_task(neuron="hold", input={})
            with anyio.fail_after(10):
                await holds.event(holds.started, task.trace_id).wait()
            # a STOP from a peer lands although thousands of Signals wait on the feed ...
            stop = Signal(type=T.STOP, trace_id=task.trace_id, payload={"rollback": False})
            await p.worker_bus.publish("cosmonapse.prio2.STOP", stop)
            with anyio.fail_after(10):
                await holds.event(holds.cancelled, task.trace_id).wait()
            assert host.is_stopped(task.trace_id)
            # ... and STOPPED acks the host waits for come past it too
            second = await host.dispatch_task(neuron="hold", input={})
            with anyio.fail_after(10):
                await holds.event(holds.started, second.trace_id).wait()
                ack = await host.stop_and_confirm(second.trace_id, timeout_s=10)
            assert ack is not None and ack.payload["cancelled"] == 1
            assert feed.pending >= 1000  # it was all still queued behind the stuck handler
            tg.cancel_scope.cancel()


async def flood_from(bus: Any, namespace: str, count: int) -> None:
    subject = f"cosmonapse.{namespace}.THOUGHT_DELTA"
    for n in range(count):
        await bus.publish(subject, Signal(type=T.THOUGHT_DELTA, payload={"delta": str(n)}))
