"""``publish_nowait`` on the network buses: sent at once when it can be, else nothing sent.

``dispatch_and_wait`` publishes its TASK this way (no cancel scope for the deadline
unless the bus would make it wait), so the promise is: True means the Signal is on
its way, in order with ``publish``; False means nothing at all went out, and the
caller's ``publish`` then waits (bounded) as before.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from nats_util import NatsServer, nats_server_binary

from cosmonapse import Signal, SignalType
from cosmonapse.errors import SynapseClosedError
from cosmonapse.synapse.dev import DevSynapse
from cosmonapse.synapse.dev_server import DevSynapseServer
from cosmonapse.synapse.nats import NatsSynapse

pytestmark = pytest.mark.anyio

SUBJECT = "cosmonapse.t.THOUGHT_DELTA"


def _delta(i: int) -> Signal:
    return Signal(type=SignalType.THOUGHT_DELTA, payload={"i": i})


async def _mixed_in_order(pub: Any, sub: Any) -> None:
    """publish_nowait and publish interleaved arrive whole and in publish order."""
    got: list[int] = []
    done = anyio.Event()
    count = 200

    async def on_signal(sig: Signal) -> None:
        got.append(sig.payload["i"])
        if len(got) == count:
            done.set()

    await sub.subscribe(SUBJECT, on_signal)
    if isinstance(sub, NatsSynapse):
        await sub.flush()  # NATS confirms nothing on SUB: a PING/PONG makes sure the server has it
    for i in range(count):
        if i % 2 == 0:
            assert pub.publish_nowait(SUBJECT, _delta(i))
        else:
            await pub.publish(SUBJECT, _delta(i))
    with anyio.fail_after(10):
        await done.wait()
    assert got == list(range(count))


async def test_dev_bus_publish_nowait_sends_in_order_with_publish() -> None:
    async with DevSynapseServer() as srv, DevSynapse(srv.url) as pub, DevSynapse(srv.url) as sub:
        await _mixed_in_order(pub, sub)


async def test_dev_bus_publish_nowait_sends_nothing_while_the_bus_is_down_or_after_close() -> None:
    srv = DevSynapseServer()
    await srv.start()
    try:
        async with DevSynapse(srv.url, reconnect_delay=0.01) as pub:
            await srv.aclose()
            link = pub._link
            if link is not None:  # the reader may not have seen the connection go yet
                await pub._drop(link)  # what it does when it does
            assert not pub.is_up
            assert not pub.publish_nowait(SUBJECT, _delta(0))
        assert not pub.publish_nowait(SUBJECT, _delta(1))  # closed: False, and publish() says why
        with pytest.raises(SynapseClosedError):
            await pub.publish(SUBJECT, _delta(1))
    finally:
        await srv.aclose()


async def test_dev_bus_publish_nowait_is_false_with_a_full_outbox_and_sends_nothing() -> None:
    async with DevSynapseServer() as srv, DevSynapse(srv.url, outbox_size=1) as pub:
        # Hold the writer back: with it busy, nothing may be written directly, and a
        # second line finds the one-slot outbox full.
        pub._writer_busy = True
        assert pub.publish_nowait(SUBJECT, _delta(0))  # takes the only slot
        assert pub._outbox is not None
        queued = pub._outbox.statistics().current_buffer_used
        assert not pub.publish_nowait(SUBJECT, _delta(1))  # full: refused, nothing queued
        assert pub._outbox.statistics().current_buffer_used == queued


async def test_nats_publish_nowait_sends_in_order_with_publish() -> None:
    if nats_server_binary() is None:
        pytest.skip("nats-server not installed")
    with NatsServer() as server:
        url = f"nats://127.0.0.1:{server.port}"
        async with NatsSynapse(url) as pub, NatsSynapse(url) as sub:
            await sub.flush()
            await _mixed_in_order(pub, sub)


async def test_nats_publish_nowait_refuses_trace_headers_and_a_closed_synapse() -> None:
    if nats_server_binary() is None:
        pytest.skip("nats-server not installed")
    with NatsServer() as server:
        url = f"nats://127.0.0.1:{server.port}"
        async with NatsSynapse(url) as pub:
            traced = Signal(
                type=SignalType.THOUGHT_DELTA,
                meta={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
            )
            assert not pub.publish_nowait(SUBJECT, traced)  # headers go with publish()
            assert pub.publish_nowait(SUBJECT, _delta(0))
        assert not pub.publish_nowait(SUBJECT, _delta(1))


async def test_dev_bus_publish_nowait_does_not_overtake_a_publish_that_waited_out_an_outage() -> None:
    """A ``publish`` that waited for the connection hands its line to the idle writer; a
    ``publish_nowait`` right after it must queue behind that line, not write past it."""
    async with DevSynapseServer() as srv, DevSynapse(srv.url, reconnect_delay=0.01) as sub:
        got: list[int] = []
        both = anyio.Event()

        async def on_signal(sig: Signal) -> None:
            got.append(sig.payload["i"])
            if len(got) == 2:
                both.set()

        await sub.subscribe(SUBJECT, on_signal)
        async with DevSynapse(srv.url, reconnect_delay=0.01) as pub:
            link = pub._link
            assert link is not None
            await pub._drop(link)  # an outage: publish() now waits for the reconnect
            with anyio.fail_after(10):
                await pub.publish(SUBJECT, _delta(0))
            assert pub.publish_nowait(SUBJECT, _delta(1))  # the line above is still the writer's
            with anyio.fail_after(10):
                await both.wait()
        assert got == [0, 1]
