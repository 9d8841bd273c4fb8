"""Direct writes (``cosmonapse.synapse.sendnow``): whole frames, in order, bounded, on both backends.

A frame written straight to the socket must never overtake one queued for the
writer task, and a socket that takes only part of a frame must get the rest
first, through the writer.  The bursts below are large enough that the kernel's
buffer fills (partial direct writes) while the reader is held back.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.abc
import pytest
from nats_util import NatsServer, nats_server_binary

from cosmonapse import Signal, SignalType
from cosmonapse.synapse.dev import DevSynapse
from cosmonapse.synapse.dev_server import DevSynapseServer
from cosmonapse.synapse.nats import NatsSynapse
from cosmonapse.synapse.sendnow import direct_writer

pytestmark = pytest.mark.anyio

BIG = "x" * 200_000  # several frames of this fill a loopback socket buffer


async def test_no_direct_path_for_streams_that_are_not_sockets() -> None:
    send, receive = anyio.create_memory_object_stream[bytes](1)
    async with send, receive:
        assert direct_writer(send) is None


async def test_a_partial_direct_write_leaves_the_rest_for_the_stream() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    accepted: list[Any] = []
    got_peer = anyio.Event()

    async def keep(stream: Any) -> None:
        accepted.append(stream)
        got_peer.set()
        await anyio.sleep_forever()

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, keep)
        client = await anyio.connect_tcp("127.0.0.1", port)
        with anyio.fail_after(10):
            await got_peer.wait()
        direct = direct_writer(client)
        assert direct is not None
        data = bytes(range(256)) * 40_000  # 10 MB: more than the socket takes at once
        taken = direct(data)
        assert 0 < taken <= len(data)
        # What the socket did not take goes through the stream, after what it took.
        async with anyio.create_task_group() as io:
            io.start_soon(client.send, data[taken:])
            received = bytearray()
            with anyio.fail_after(20):
                while len(received) < len(data):
                    received += await accepted[0].receive(1 << 20)
        assert bytes(received) == data
        # Nothing is written directly while a write is under way (asyncio: buffer non-empty).
        await client.aclose()
        assert direct(b"late") == 0
        tg.cancel_scope.cancel()


async def _burst_in_order(publisher: Any, subscriber: Any, subject: str) -> None:
    got: list[int] = []
    done = anyio.Event()
    count = 60

    async def on_signal(sig: Signal) -> None:
        got.append(sig.payload["i"])
        if len(got) == count:
            done.set()

    await subscriber.subscribe(subject, on_signal)
    if isinstance(subscriber, NatsSynapse):
        await (
            subscriber.flush()
        )  # NATS subscribe does not wait for the server: the publisher is another connection
    for i in range(count):
        # Big and small frames mixed, some with a pause (the direct path opens again after one).
        text = BIG if i % 3 == 0 else "small"
        await publisher.publish(subject, Signal(type=SignalType.THOUGHT_DELTA, payload={"i": i, "t": text}))
        if i % 7 == 0:
            await anyio.sleep(0.001)  # allowed: spaces publishes out so that direct writes happen
    with anyio.fail_after(30):
        await done.wait()
    assert got == list(range(count))


async def test_dev_bus_burst_with_direct_writes_arrives_whole_and_in_order() -> None:
    async with DevSynapseServer() as srv, DevSynapse(srv.url) as pub, DevSynapse(srv.url) as sub:
        await _burst_in_order(pub, sub, "cosmonapse.t.THOUGHT_DELTA")


async def test_nats_burst_with_direct_writes_arrives_whole_and_in_order() -> None:
    if nats_server_binary() is None:
        pytest.skip("nats-server not installed")
    with NatsServer() as server:
        url = f"nats://127.0.0.1:{server.port}"
        async with NatsSynapse(url) as pub, NatsSynapse(url) as sub:
            await _burst_in_order(pub, sub, "cosmonapse.t.THOUGHT_DELTA")


def test_the_gate_opens_after_a_quiet_spell_and_holds_off_in_a_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    from cosmonapse.synapse import sendnow

    clock = [100.0]
    monkeypatch.setattr(sendnow.time, "monotonic", lambda: clock[0])
    gate = sendnow.DirectGate()
    assert gate.open()  # quiet: direct
    clock[0] += sendnow.DIRECT_IDLE_S / 2
    assert not gate.open()  # wrote a moment ago
    clock[0] += sendnow.DIRECT_IDLE_S
    assert gate.open()
    gate.queued()  # a frame queued right behind the direct one: a burst
    clock[0] += sendnow.DIRECT_IDLE_S * 2
    assert not gate.open()  # quiet again, but held off
    clock[0] += sendnow.BURST_HOLD_S
    assert gate.open()
    clock[0] += sendnow.BURST_S * 2
    gate.queued()  # long after the direct write: not a burst
    clock[0] += sendnow.DIRECT_IDLE_S
    assert gate.open()
    gate.last_write = clock[0]  # the writer task just sent
    assert not gate.open()
