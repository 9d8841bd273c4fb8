"""The asyncio socket stream (``cosmonapse.synapse.aiostream``) on real loopback sockets.

Each promise of its docstring is tried here: data both ways and in order, the
peer's EOF (half-close), a reset from a raw socket, a peer that does not read
(``send`` waits and is cancelled cleanly), a reader that does not read (the peer
gets TCP backpressure; this side's buffer stays bounded), a cancelled ``receive``
that loses nothing, the direct write, and ``aclose`` (flushes, bounded, twice).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
import sniffio
from anyio.abc import SocketAttribute, SocketListener, SocketStream

from cosmonapse.synapse import aiostream
from cosmonapse.synapse.aiostream import AioSocketStream, accept, connect_tcp
from cosmonapse.synapse.sendnow import direct_writer

pytestmark = pytest.mark.anyio

PATTERN = bytes(range(256)) * 256  # 64 KiB; position-dependent, so loss or reordering shows


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # trio has no protocol API: there, connect_tcp gives anyio's stream (tested below)


@asynccontextmanager
async def _listener() -> AsyncIterator[tuple[SocketListener, int]]:
    multi = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with multi:
        listener = multi.listeners[0]
        assert isinstance(listener, SocketListener)
        yield listener, listener.extra(SocketAttribute.local_port)


@asynccontextmanager
async def _pair() -> AsyncIterator[tuple[AioSocketStream, AioSocketStream]]:
    """(client, server), both ends on our stream."""
    async with _listener() as (listener, port):
        client = await connect_tcp("127.0.0.1", port)
        server = await accept(listener)
        assert isinstance(client, AioSocketStream) and isinstance(server, AioSocketStream)
        try:
            yield client, server
        finally:
            await client.aclose()
            await server.aclose()


@asynccontextmanager
async def _raw_peer(rcvbuf: int | None = None) -> AsyncIterator[tuple[socket.socket, AioSocketStream]]:
    """(a plain non-blocking socket, our stream accepted from it)."""
    async with _listener() as (listener, port):
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.connect(("127.0.0.1", port))  # loopback: completes from the backlog at once
        raw.setblocking(False)
        stream = await accept(listener)
        assert isinstance(stream, AioSocketStream)
        try:
            yield raw, stream
        finally:
            raw.close()
            await stream.aclose()


async def _receive_exactly(stream: SocketStream, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        got += await stream.receive()
    return bytes(got)


async def test_bytes_flow_both_ways_in_order_and_the_addresses_are_there() -> None:
    async with _pair() as (client, server):
        with anyio.fail_after(10):
            await client.send(PATTERN * 8)
            assert await _receive_exactly(server, len(PATTERN) * 8) == PATTERN * 8
            await server.send(b"pong")
            assert await _receive_exactly(client, 4) == b"pong"
        assert server.extra(SocketAttribute.remote_port) == client.extra(SocketAttribute.local_port)
        assert client.extra(SocketAttribute.remote_address)[0] == "127.0.0.1"


async def test_connections_sharing_the_loops_read_buffer_each_get_their_own_bytes() -> None:
    """All connections of a loop read into one buffer: three peers sending different
    patterns at once, more than the buffer each, must each arrive whole and unmixed."""
    size = aiostream.READ_CHUNK * 3 + 17
    payloads = [bytes((i * 7 + n) % 251 for i in range(size)) for n in range(3)]
    async with _pair() as (c0, s0), _pair() as (c1, s1), _pair() as (c2, s2):
        assert s0._protocol.buffer is s1._protocol.buffer is c2._protocol.buffer
        got: dict[int, bytes] = {}

        async def read(n: int, stream: SocketStream) -> None:
            got[n] = await _receive_exactly(stream, size)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for n, server in enumerate((s0, s1, s2)):
                    tg.start_soon(read, n, server)
                for client, payload in zip((c0, c1, c2), payloads, strict=True):
                    tg.start_soon(client.send, payload)
        assert [got[n] for n in range(3)] == payloads


async def test_receive_returns_what_is_buffered_up_to_max_bytes() -> None:
    async with _pair() as (client, server):
        with anyio.fail_after(10):
            await client.send(b"abcdef")
            assert await server.receive(4) == b"abcd"
            assert await server.receive(4) == b"ef"
        with pytest.raises(ValueError):
            await server.receive(0)


async def test_peer_eof_ends_the_stream_after_its_data_and_this_side_can_still_send() -> None:
    async with _pair() as (client, server):
        with anyio.fail_after(10):
            await client.send(b"last words")
            await client.send_eof()
            assert await _receive_exactly(server, 10) == b"last words"
            with pytest.raises(anyio.EndOfStream):
                await server.receive()
            with pytest.raises(anyio.EndOfStream):
                await server.receive()  # and again
            await server.send(b"reply after half-close")
            assert await _receive_exactly(client, 22) == b"reply after half-close"


async def test_a_reset_from_a_raw_socket_is_a_broken_resource() -> None:
    async with _raw_peer() as (raw, stream):
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()  # linger 0: RST instead of FIN
        with anyio.fail_after(10):
            with pytest.raises(anyio.BrokenResourceError):
                await stream.receive()
        with pytest.raises(anyio.BrokenResourceError):
            await stream.send(b"anyone?")
        assert direct_writer(stream) is not None and stream.write_now(b"x") == 0


async def _fill_until_send_waits(stream: AioSocketStream) -> int:
    """Send until the transport pauses writing; returns the bytes sent."""
    sent = 0
    while not stream._protocol.writing_paused:
        await stream.send(PATTERN)
        sent += len(PATTERN)
    return sent


async def test_a_peer_that_does_not_read_blocks_send_which_cancels_cleanly() -> None:
    async with _raw_peer(rcvbuf=4096) as (raw, stream):
        with anyio.fail_after(20):
            sent = await _fill_until_send_waits(stream)
            assert stream.write_now(b"direct") == 0  # nothing direct while the buffer is full
            # The next send waits; cancel it while it waits.
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(stream.send, b"never written")
                    await anyio.wait_all_tasks_blocked()
                    assert stream._sending
                    scope.cancel()
            assert scope.cancelled_caught
            # Still usable: the peer reads, a send goes through, and what arrives is exactly
            # what was sent, without the cancelled item.
            got = bytearray()
            async with anyio.create_task_group() as tg:
                tg.start_soon(stream.send, b"END")
                while not got.endswith(b"END"):
                    await anyio.wait_readable(raw)
                    got += raw.recv(1 << 20)
        assert bytes(got) == PATTERN * (sent // len(PATTERN)) + b"END"


async def test_a_reader_that_does_not_read_gives_the_peer_tcp_backpressure() -> None:
    async with _raw_peer() as (raw, stream):
        protocol = stream._protocol
        sent = 0
        twice = memoryview(PATTERN * 2)
        with anyio.fail_after(20):
            # The peer sends as fast as it can (going on where a partial send stopped); nobody
            # receives on our side.
            while True:
                try:
                    offset = sent % len(PATTERN)
                    sent += raw.send(twice[offset : offset + len(PATTERN)])
                    continue
                except BlockingIOError:
                    pass
                if protocol.reading_paused:
                    break
                await anyio.lowlevel.checkpoint()  # let our transport read what arrived
            # Our side holds a bounded amount; the rest stays in the kernels, and the peer is blocked.
            await anyio.wait_all_tasks_blocked()
            assert protocol.buffered <= aiostream.READ_HIGH + 256 * 1024
            assert sent > protocol.buffered
            with pytest.raises(BlockingIOError):
                raw.send(PATTERN)
            # Receiving drains the buffer, reading resumes and every byte arrives in order.
            got = await _receive_exactly(stream, sent)
        assert not protocol.reading_paused
        assert got == (PATTERN * (sent // len(PATTERN) + 1))[:sent]


async def test_a_receive_cancelled_while_waiting_loses_no_data() -> None:
    async with _pair() as (client, server):
        with anyio.fail_after(10):
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(server.receive)
                    await anyio.wait_all_tasks_blocked()
                    scope.cancel()
            assert scope.cancelled_caught
            await client.send(b"after the cancel")
            assert await _receive_exactly(server, 16) == b"after the cancel"


async def test_two_receivers_at_once_is_an_error() -> None:
    async with _pair() as (_, server):
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(server.receive)
                await anyio.wait_all_tasks_blocked()
                with pytest.raises(anyio.BusyResourceError):
                    await server.receive()
                tg.cancel_scope.cancel()


async def test_inline_reading_takes_new_bytes_in_the_read_callback_and_the_receiver_sleeps_on() -> None:
    async with _pair() as (client, server):
        taken: list[bytes] = []
        libraries: list[str] = []
        arrived = anyio.Event()

        def on_data() -> None:
            libraries.append(sniffio.current_async_library())  # outside any task, still known
            taken.append(server.receive_nowait())
            arrived.set()

        received: list[bytes] = []

        async def receiver() -> None:
            received.append(await server.receive())

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(receiver)
                await anyio.wait_all_tasks_blocked()
                server.read_inline(on_data)
                await client.send(b"one")
                await arrived.wait()
                await anyio.wait_all_tasks_blocked()
                assert (taken, received, libraries) == ([b"one"], [], ["asyncio"])
                server.read_inline(None)  # off: the receiver gets the next bytes as before
                await client.send(b"two")
        assert (taken, received) == ([b"one"], [b"two"])
        with pytest.raises(anyio.WouldBlock):
            server.receive_nowait()


async def test_bytes_inline_reading_leaves_behind_wake_the_receiver_in_order() -> None:
    async with _pair() as (client, server):

        def take_one_byte() -> None:
            server.receive_nowait(1)

        got: list[bytes] = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def receiver() -> None:
                    got.append(await server.receive())

                tg.start_soon(receiver)
                await anyio.wait_all_tasks_blocked()
                server.read_inline(take_one_byte)
                await client.send(b"abc")
        assert got == [b"bc"]


async def test_an_error_in_inline_reading_is_raised_by_the_waiting_receive_and_stops_it() -> None:
    class Boom(Exception):
        pass

    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise Boom

    async with _pair() as (client, server):
        outcome: list[BaseException] = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def receiver() -> None:
                    try:
                        await server.receive()
                    except Boom as exc:
                        outcome.append(exc)

                tg.start_soon(receiver)
                await anyio.wait_all_tasks_blocked()
                server.read_inline(broken)
                await client.send(b"x")
            assert len(outcome) == 1 and calls == [1]
            await client.send(b"y")  # inline reading is off now; the bytes wait for receive
            assert await _receive_exactly(server, 2) == b"xy"


async def test_direct_writes_go_out_when_idle() -> None:
    async with _pair() as (client, server):
        write = direct_writer(client)
        assert write is not None
        assert write(b"straight") == 8
        with anyio.fail_after(10):
            assert await _receive_exactly(server, 8) == b"straight"


async def test_aclose_twice_and_any_use_after_it_is_closed_resource() -> None:
    async with _pair() as (client, server):
        with anyio.fail_after(10):
            failures: list[BaseException] = []
            async with anyio.create_task_group() as tg:

                async def receive() -> None:
                    try:
                        await server.receive()
                    except anyio.ClosedResourceError as exc:
                        failures.append(exc)

                tg.start_soon(receive)
                await anyio.wait_all_tasks_blocked()
                await server.aclose()  # wakes the waiting receive
                await server.aclose()
            assert len(failures) == 1
            with pytest.raises(anyio.ClosedResourceError):
                await server.receive()
            with pytest.raises(anyio.ClosedResourceError):
                await server.send(b"x")
            assert server.write_now(b"x") == 0
            with pytest.raises(anyio.EndOfStream):
                await client.receive()  # the peer sees a clean end


async def test_aclose_flushes_what_is_buffered_to_a_reading_peer() -> None:
    async with _listener() as (listener, port):
        client = await connect_tcp("127.0.0.1", port)
        peer = await listener.accept()  # anyio's stream: it reads
        assert isinstance(client, AioSocketStream)
        async with peer:
            with anyio.fail_after(20):
                total = 0
                while client._transport.get_write_buffer_size() == 0:
                    await client.send(PATTERN)  # until some of it is still buffered
                    total += len(PATTERN)
                received: list[int] = []
                async with anyio.create_task_group() as tg:

                    async def read_all() -> None:
                        n = 0
                        try:
                            while True:
                                n += len(await peer.receive())
                        except anyio.EndOfStream:
                            received.append(n)

                    tg.start_soon(read_all)
                    await client.aclose()
            assert received == [total]  # nothing buffered was dropped


async def test_aclose_with_a_peer_that_does_not_read_is_bounded() -> None:
    async with _raw_peer(rcvbuf=4096) as (_, stream):
        with anyio.fail_after(20):
            await _fill_until_send_waits(stream)
        with anyio.fail_after(aiostream.CLOSE_FLUSH_S + 5):
            await stream.aclose()  # waits for the flush up to CLOSE_FLUSH_S, then aborts
            await stream._protocol.closed.wait()  # connection_lost: the socket is gone


async def test_a_cancelled_aclose_aborts_at_once() -> None:
    async with _raw_peer(rcvbuf=4096) as (_, stream):
        with anyio.fail_after(20):
            await _fill_until_send_waits(stream)
        with anyio.fail_after(aiostream.CLOSE_FLUSH_S / 2):
            await anyio.aclose_forcefully(stream)
            await stream._protocol.closed.wait()


def test_on_trio_the_helpers_give_anyios_streams() -> None:
    async def main() -> None:
        async with _listener() as (listener, port):
            client = await connect_tcp("127.0.0.1", port)
            server = await accept(listener)
            kinds = {type(client).__module__, type(server).__module__}
            async with client, server:
                await client.send(b"hi")
                with anyio.fail_after(10):
                    assert await server.receive() == b"hi"
            assert kinds == {"anyio._backends._trio"}

    anyio.run(main, backend="trio")
