"""Delivery straight from the bus (``Subscription.fast``, ``Core.route_nowait``) keeps the pump's promises.

The synchronous path may only take a Signal when nothing is queued or being handled
ahead of it on its subscription, must leave a Signal it refuses untouched for the
pump (which offers each Signal it takes to it once more before awaiting the
handler), and a failure in it is logged like a handler's, never raised into the bus.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from cosmonapse import Axon, Dendrite, MemorySynapse, Signal, SignalType
from cosmonapse.synapse.dev import DevSynapse
from cosmonapse.synapse.dev_server import DevSynapseServer

pytestmark = pytest.mark.anyio


def _sig(i: int) -> Signal:
    return Signal(type=SignalType.AUDIT, payload={"i": i})


async def _never_overtakes(synapse: Any) -> None:
    handled: list[int] = []
    fast_seen: list[int] = []
    first_in = anyio.Event()
    release = anyio.Event()
    all_done = anyio.Event()

    async def handler(sig: Signal) -> None:
        handled.append(sig.payload["i"])
        if sig.payload["i"] == 0:
            first_in.set()
            await release.wait()
        if len(handled) == 3:
            all_done.set()

    def fast(sig: Signal) -> bool:
        fast_seen.append(sig.payload["i"])
        if sig.payload["i"] == 0:
            return False  # refused: the pump takes it (and blocks in the handler)
        handled.append(sig.payload["i"])
        if len(handled) == 3:
            all_done.set()
        return True

    sub = await synapse.subscribe("t.audit", handler)
    sub.fast = fast
    await synapse.publish("t.audit", _sig(0))
    with anyio.fail_after(10):
        await first_in.wait()
    await synapse.publish("t.audit", _sig(1))  # the pump is busy with 0: must queue
    await synapse.publish("t.audit", _sig(2))
    # A barrier: a subscription is confirmed once the bus has passed on everything
    # published before it, so 1 and 2 are filed before the handler goes on.
    await synapse.subscribe("t.barrier", handler)
    assert sub.pending == 2
    # 0: refused by the bus's offer and again by the pump's (which then awaited the handler);
    # 1 and 2 arrived behind a busy pump: the bus did not offer them
    assert fast_seen == [0, 0]
    release.set()
    with anyio.fail_after(10):
        await all_done.wait()
    assert handled == [0, 1, 2]
    assert fast_seen == [0, 0, 1, 2]  # the pump offers what it takes to the synchronous path first


async def test_fast_path_never_overtakes_a_busy_pump_in_process() -> None:
    async with MemorySynapse() as syn:
        await _never_overtakes(syn)


async def test_fast_path_never_overtakes_a_busy_pump_on_the_dev_bus() -> None:
    async with DevSynapseServer() as srv, DevSynapse(srv.url) as syn:
        await _never_overtakes(syn)


async def test_a_failing_fast_path_is_logged_and_counts_as_handled(caplog: pytest.LogCaptureFixture) -> None:
    handled: list[Signal] = []

    async def handler(sig: Signal) -> None:
        handled.append(sig)

    def fast(sig: Signal) -> bool:
        raise RuntimeError("boom in the fast path")

    async with MemorySynapse() as syn:
        sub = await syn.subscribe("t.audit", handler)
        sub.fast = fast
        with caplog.at_level(logging.ERROR, logger="cosmonapse.synapse"):
            await syn.publish("t.audit", _sig(7))  # must not raise into the publisher
        assert "boom in the fast path" in caplog.text
        await syn.publish("t.audit", _sig(8))  # the subscription still works
    assert handled == []  # handled (failed) by the fast path, not repeated by the pump


async def test_tasks_beyond_idle_runners_go_through_the_pump_and_all_run() -> None:
    """A burst larger than the idle runners: the rest take the buffered path; none is lost."""
    count = 50
    started = 0
    all_in = anyio.Event()
    release = anyio.Event()

    async def hold(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        nonlocal started
        started += 1
        if started == count:
            all_in.set()
        await release.wait()
        return {"ok": True}

    async with MemorySynapse() as syn:
        worker = Dendrite(
            synapse=syn, namespace="fd", role="worker", heartbeat_s=0, max_concurrent_tasks=count
        )
        worker.attach_axon(Axon("hold", hold))
        orch = Dendrite(synapse=syn, namespace="fd", heartbeat_s=0)
        async with worker, orch:
            replies: list[Signal] = []
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    replies.append(await orch.dispatch_and_wait(neuron="hold", input={}, timeout_s=20))

                for _ in range(count):
                    tg.start_soon(call)
                with anyio.fail_after(20):
                    await all_in.wait()
                release.set()
    assert len(replies) == count
    assert all(r.type is SignalType.AGENT_OUTPUT for r in replies)


async def test_pathway_callbacks_still_run_before_readers_see_the_signal() -> None:
    """A Pathway with on() callbacks makes the fast path decline: order and callbacks as before."""

    async def talk(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        for k in range(5):
            await ctx.emit(SignalType.THOUGHT_DELTA, {"delta": str(k)})
        return {"done": True}

    seen_by_callback: list[str] = []
    async with MemorySynapse() as syn:
        worker = Dendrite(synapse=syn, namespace="fd", role="worker", heartbeat_s=0)
        worker.attach_axon(Axon("talk", talk))
        orch = Dendrite(synapse=syn, namespace="fd", heartbeat_s=0)
        async with worker, orch:
            pw = await orch.dispatch(neuron="talk", input={})

            @pw.on(SignalType.THOUGHT_DELTA)
            async def on_delta(sig: Signal) -> None:
                seen_by_callback.append(sig.payload["delta"])

            read: list[str] = []
            with anyio.fail_after(10):
                async for sig in pw:
                    if sig.type is SignalType.THOUGHT_DELTA:
                        assert sig.payload["delta"] in seen_by_callback  # its callback ran first
                        read.append(sig.payload["delta"])
                    elif sig.type is SignalType.AGENT_OUTPUT:
                        break
    assert read == ["0", "1", "2", "3", "4"]
