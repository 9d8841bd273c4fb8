"""``publish()`` is cancellation-safe (issue 9, item 6, bus part).

The core bounds a publish by the caller's deadline, so a publish cancelled while
it waits — for outbox room, or for a reconnect — must leave no half-written
frame on the wire and lose nothing that was already accepted; the synapse stays
usable.  Tried against buses that stop reading and buses that go away.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import anyio
import orjson
import pytest
from anyio.abc import SocketAttribute, SocketStream
from devbus_util import ServerInTask
from nats_util import Inbox, NatsServer, nats_server_binary

from cosmonapse import Signal, SignalType
from cosmonapse.synapse.dev import DevSynapse
from cosmonapse.synapse.nats import NatsSynapse

pytestmark = pytest.mark.anyio

needs_nats = pytest.mark.skipif(nats_server_binary() is None, reason="nats-server not installed")
BIG = "b" * 256 * 1024


def sig(n: int, blob: str = "") -> Signal:
    return Signal(type=SignalType.TASK, payload={"n": n, "blob": blob})


@asynccontextmanager
async def gated_dev_bus() -> AsyncIterator[tuple[GatedBus, str]]:
    """A gated dev bus on loopback; yields it and its cosmo:// URL."""
    bus = GatedBus(b'{"op":"welcome"}\n', b'{"op":"pong"}\n', b'{"op":"ping"}\n')
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, bus.handle)
            yield bus, f"cosmo://127.0.0.1:{port}"
            tg.cancel_scope.cancel()


class GatedBus:
    """A listener that completes the handshake, then reads nothing until ``gate`` is set."""

    def __init__(self, handshake: bytes, answer: bytes, marker: bytes) -> None:
        self.handshake, self.answer, self.marker = handshake, answer, marker
        self.gate = anyio.Event()
        self.received = bytearray()
        self.done = anyio.Event()

    async def handle(self, stream: SocketStream) -> None:
        async with stream:
            await stream.send(self.handshake)
            seen = b""
            while self.marker not in seen:
                seen += await stream.receive()
            await stream.send(self.answer)
            self.received += seen.split(self.marker, 1)[1]
            await self.gate.wait()
            try:
                while True:
                    self.received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                self.done.set()


async def fill_until_blocked(publish, make) -> tuple[list[int], list[int]]:  # type: ignore[no-untyped-def]
    """Publish until publishes wait; then cancel a few waiting ones.  Returns (returned, cancelled)."""
    returned: list[int] = []
    cancelled: list[int] = []
    n = 0
    with anyio.fail_after(30):
        while len(cancelled) < 3:
            with anyio.move_on_after(0.2) as scope:
                await publish(make(n))
            (cancelled if scope.cancelled_caught else returned).append(n)
            n += 1
    return returned, cancelled


def check_order(got: list[int], returned: list[int], cancelled: list[int]) -> None:
    assert len(got) == len(set(got)), "a frame was sent twice"
    assert [n for n in got if n in returned] == returned, "a publish that returned was lost"
    assert set(got) <= set(returned) | set(cancelled)
    # A cancelled publish may have been taken just as it was cancelled, never more than that one.
    assert len(set(got) & set(cancelled)) <= len(cancelled)


async def test_dev_publish_cancelled_while_the_outbox_is_full() -> None:
    async with gated_dev_bus() as (bus, url):
        syn = DevSynapse(url, outbox_size=2, publish_timeout=60)
        await syn.connect()
        returned, cancelled = await fill_until_blocked(
            lambda s: syn.publish("cosmonapse.c.TASK", s), lambda n: sig(n, BIG)
        )
        bus.gate.set()
        await syn.publish("cosmonapse.c.TASK", sig(10_000))  # usable again once there is room
        returned.append(10_000)
        await syn.close()  # flushes what was accepted
        with anyio.fail_after(30):
            await bus.done.wait()
    lines = bytes(bus.received).split(b"\n")
    assert lines.pop() == b""  # the stream ends on a whole line
    messages = [orjson.loads(line) for line in lines]  # every line is whole JSON
    got = [orjson.loads(m["frame"])["payload"]["n"] for m in messages if m["op"] == "pub"]
    check_order(got, returned, cancelled)


async def test_dev_publish_cancelled_while_waiting_for_a_reconnect() -> None:
    inbox = Inbox()
    async with anyio.create_task_group() as tg:
        bus = ServerInTask(tg)
        srv = await bus.start()
        async with DevSynapse(srv.url, reconnect_delay=0.01, publish_timeout=60) as syn:
            await syn.subscribe("cosmonapse.o.TASK", inbox)
            await bus.stop()
            with anyio.fail_after(30):
                while True:  # the first publishes may still find the dying socket writable
                    with anyio.move_on_after(0.2) as scope:
                        await syn.publish("cosmonapse.o.TASK", sig(-1))
                    if scope.cancelled_caught:
                        break
            reconnected = anyio.Event()
            syn.add_reconnect_callback(reconnected.set)
            await bus.start(port=srv.port)
            with anyio.fail_after(30):
                await reconnected.wait()
            await syn.publish("cosmonapse.o.TASK", sig(1))
            got = await inbox.wait_for(1, timeout_s=10)
            assert [s.payload["n"] for s in got] == [1]  # the cancelled one was never queued
        await bus.stop()


@pytest.fixture(scope="module")
def nats() -> Iterator[NatsServer | None]:
    if nats_server_binary() is None:
        yield None
        return
    with NatsServer() as srv:
        yield srv


@needs_nats
async def test_nats_publish_cancelled_while_waiting_for_a_reconnect(nats: NatsServer) -> None:
    inbox = Inbox()
    async with NatsSynapse(nats.url, reconnect_wait=0.01, publish_timeout=60) as syn:
        await syn.subscribe("cosmo.o", inbox)
        await syn.flush()
        nats.kill()
        try:
            with anyio.fail_after(30):
                while True:
                    with anyio.move_on_after(0.2) as scope:
                        await syn.publish("cosmo.o", sig(-1))
                    if scope.cancelled_caught:
                        break
        finally:
            await anyio.to_thread.run_sync(nats.start)
        await syn.publish("cosmo.o", sig(1))
        await syn.flush()
        got = await inbox.wait_for(1, timeout_s=10)
        assert [s.payload["n"] for s in got if s.payload["n"] >= 0] == [1]


async def test_nats_publish_cancelled_while_the_outbox_is_full() -> None:
    info = b'INFO {"server_id":"gated","max_payload":4194304}\r\n'
    bus = GatedBus(info, b"PONG\r\n", b"PING\r\n")
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, bus.handle)
            syn = NatsSynapse(
                f"nats://127.0.0.1:{port}",
                outbox_limit=512 * 1024,
                publish_timeout=60,
                ping_interval=0,
                drain_timeout=0.2,
            )
            await syn.connect()
            returned, cancelled = await fill_until_blocked(
                lambda s: syn.publish("cosmo.c", s), lambda n: sig(n, BIG)
            )
            bus.gate.set()
            await syn.publish("cosmo.c", sig(10_000))
            returned.append(10_000)
            with anyio.fail_after(30):
                await syn.close()
                await bus.done.wait()
            tg.cancel_scope.cancel()
    got = []
    data = bytes(bus.received)
    while data:  # PUB <subject> <#bytes>\r\n<payload>\r\n ..., each whole
        line, _, rest = data.partition(b"\r\n")
        parts = line.split()
        if parts[0] == b"PUB":
            size = int(parts[-1])
            payload, tail = rest[:size], rest[size : size + 2]
            assert tail == b"\r\n", "a PUB frame was cut short"
            got.append(orjson.loads(payload)["payload"]["n"])
            rest = rest[size + 2 :]
        data = rest
    check_order(got, returned, cancelled)


async def test_dev_subscribe_cancelled_before_the_bus_confirmed_is_taken_back() -> None:
    async with gated_dev_bus() as (bus, url):
        syn = DevSynapse(url, publish_timeout=60)
        await syn.connect()
        with anyio.move_on_after(0.2) as scope:
            await syn.subscribe("cosmonapse.c.TASK", Inbox())  # the gated bus never answers its ping
        assert scope.cancelled_caught
        bus.gate.set()
        await syn.close()
        with anyio.fail_after(30):
            await bus.done.wait()
    messages = [orjson.loads(line) for line in bytes(bus.received).split(b"\n") if line]
    subs = [m["sub_id"] for m in messages if m["op"] == "sub"]
    assert subs and [m["sub_id"] for m in messages if m["op"] == "unsub"] == subs
