"""STOP has priority at the bus level: a network reader never waits for one full subscription.

Issue 9, item 2: with thousands of TASKs queued behind a running one on cosmo://
or NATS, the STOP for the running trace was never applied, because the client's
one reader awaited room in the TASK subscription's buffer while the STOP waited
behind it on the socket.  Now the reader files without waiting (up to the
subscription's pending limits, then drops and counts), so the STOP's own
subscription gets it at once.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from bus_kit import NETWORK, open_bus, settle, worker_and_orchestrator
from nats_util import Inbox

from cosmonapse import Axon, NeuronContext, Signal, SignalType

pytestmark = pytest.mark.anyio

BACKLOG = 3000  # the figure; the subscription buffer holds 1024


def task(n: int) -> Signal:
    return Signal(type=SignalType.TASK, payload={"n": n})


class Hang:
    """A Neuron that runs until cancelled; counts the calls that started."""

    def __init__(self) -> None:
        self.started = 0
        self.first_entered = anyio.Event()
        self.first_cancelled = anyio.Event()

    async def __call__(self, input: dict[str, Any], ctx: NeuronContext) -> Any:
        self.started += 1
        first = self.started == 1
        if first:
            self.first_entered.set()
        try:
            await anyio.sleep_forever()
        finally:
            if first:
                self.first_cancelled.set()


@pytest.mark.parametrize("kind", NETWORK)
async def test_stop_lands_with_thousands_of_tasks_queued(kind: str, nats_url: str | None) -> None:
    hang = Hang()
    axons = [Axon("hang", hang)]
    async with worker_and_orchestrator(kind, nats_url, "prio", axons, max_concurrent_tasks=1) as orch:
        first = await orch.dispatch_task(neuron="hang", input={})
        with anyio.fail_after(10):
            await hang.first_entered.wait()
        for _ in range(BACKLOG):
            await orch.dispatch_task(neuron="hang", input={})
        await orch.emit_stop(trace_id=first.trace_id)  # on the wire after every queued TASK
        with anyio.fail_after(10):
            await hang.first_cancelled.wait()
        # It jumped the queue: the backlog was still there when the STOP landed.
        assert hang.started <= 3, hang.started


@pytest.mark.parametrize("kind", NETWORK)
async def test_a_blocked_subscription_does_not_hold_up_the_others(kind: str, nats_url: str | None) -> None:
    gate = anyio.Event()
    blocked_got = Inbox()

    async def blocked(sig: Signal) -> None:
        await gate.wait()
        await blocked_got(sig)

    other = Inbox()
    async with open_bus(kind, nats_url) as make:
        sub_side, pub_side = make(), make()
        async with sub_side, pub_side:
            await sub_side.subscribe("cosmonapse.p.TASK", blocked)
            await sub_side.subscribe("cosmonapse.p.STOP", other)
            await settle(sub_side)
            for n in range(BACKLOG):
                await pub_side.publish("cosmonapse.p.TASK", task(n))
            for n in range(3):
                await pub_side.publish("cosmonapse.p.STOP", Signal(type=SignalType.STOP, payload={"n": n}))
            assert [s.payload["n"] for s in await other.wait_for(3, timeout_s=10)] == [0, 1, 2]
            gate.set()
            got = await blocked_got.wait_for(BACKLOG, timeout_s=20)
            assert [s.payload["n"] for s in got] == list(range(BACKLOG))  # nothing lost, order kept
            assert sub_side.dropped == 0


@pytest.mark.parametrize("kind", NETWORK)
async def test_over_the_pending_limit_signals_are_dropped_counted_and_logged(
    kind: str, nats_url: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    gate = anyio.Event()
    entered = anyio.Event()
    got = Inbox()

    async def blocked(sig: Signal) -> None:
        entered.set()
        await gate.wait()
        await got(sig)

    marker = Inbox()
    async with open_bus(kind, nats_url, pending_limit=10) as make:
        sub_side, pub_side = make(), make()
        async with sub_side, pub_side:
            sub = await sub_side.subscribe("cosmonapse.d.TASK", blocked)
            await sub_side.subscribe("cosmonapse.d.STOP", marker)
            await settle(sub_side)
            await pub_side.publish("cosmonapse.d.TASK", task(0))
            with anyio.fail_after(10):
                await entered.wait()  # the pump holds #0; the buffer takes 10 more
            with caplog.at_level(logging.WARNING, logger="cosmonapse.synapse"):
                for n in range(1, 101):
                    await pub_side.publish("cosmonapse.d.TASK", task(n))
                await pub_side.publish("cosmonapse.d.STOP", Signal(type=SignalType.STOP))
                await marker.wait_for(1, timeout_s=10)  # the reader got past all of them
            assert sub.dropped == 90 and sub_side.dropped == 90
            assert sub.pending == 10
            reports = [r for r in caplog.records if "slow consumer" in r.getMessage()]
            assert len(reports) == 1  # rate-limited: one report for the burst
            assert "pending limits (10 Signals" in reports[0].getMessage()
            gate.set()
            kept = await got.wait_for(11, timeout_s=10)
            assert [s.payload["n"] for s in kept] == list(range(11))  # the oldest kept, the newest dropped


async def test_a_pump_with_a_long_backlog_lets_other_pumps_run() -> None:
    """A handler that never waits cannot keep its pump from yielding (fairness between subscriptions)."""
    order: list[str] = []
    async with open_bus("memory") as make:
        syn = make()
        async with syn:

            async def busy(sig: Signal) -> None:
                order.append("busy")

            stop_seen = Inbox()

            async def on_stop(sig: Signal) -> None:
                order.append("stop")
                await stop_seen(sig)

            await syn.subscribe("b.TASK", busy)
            await syn.subscribe("b.STOP", on_stop)
            for n in range(1000):
                await syn.publish("b.TASK", task(n))
            await syn.publish("b.STOP", Signal(type=SignalType.STOP))
            await stop_seen.wait_for(1)
            assert order.index("stop") < 200, order.index("stop")
