"""A TCP byte stream for asyncio built on ``asyncio.BufferedProtocol``: the bus connections' socket layer.

Why not anyio's asyncio stream: it resumes reading before every wait in
``receive()`` and pauses reading after it (two ``epoll_ctl`` calls per wait), yields
to the event loop once per ``receive()`` that finds data already there, and once per
``send()``.  On a bus connection that is most of what a round trip costs beyond the
kernel.  This stream keeps reading armed, hands out what is buffered at once, and
writes at once; it waits only when there is nothing to read or the transport's own
write buffer is full; and with :meth:`AioSocketStream.read_inline` the bytes that
arrive while a task waits can be handled in the read callback without waking that
task (the dev bus does).  It implements ``anyio.abc.SocketStream``, so the code above it
is the same on both backends; on trio (which has no protocol API) :func:`connect_tcp`
and :func:`accept` give anyio's streams.

Its buffers and what happens when they are full:

* **read**: bytes that arrived and were not received yet.  Over ``READ_HIGH`` the
  transport stops reading the socket; below ``READ_LOW`` it reads again.  A reader
  that does not read therefore fills the kernel's buffers and the peer's sends block
  (TCP backpressure); this side holds at most ``READ_HIGH`` plus one read
  (``READ_CHUNK``).  Reads go into one buffer per event loop (``recv_into``) and
  only the bytes that came are copied out: asyncio's own path allocates 256 KiB per
  read and shrinks it, which glibc serves with ``mmap``/``mremap``/``munmap`` (three
  system calls per read, a fifth of the dev bus server's time per message).
* **write**: asyncio's transport buffer (its default high-water mark, 64 KiB).
  ``send`` waits, cancellably, while the transport has paused writing, and writes the
  whole item once it has room: at most the high-water mark plus one item is held, and
  a ``send`` cancelled while waiting has written nothing.

Errors: the end of the peer's data is ``anyio.EndOfStream`` (after everything that
came before it); a reset or any other socket error is ``anyio.BrokenResourceError``;
any use after ``aclose`` is ``anyio.ClosedResourceError``.  ``aclose`` lets the
transport flush what is buffered for up to ``CLOSE_FLUSH_S``, then aborts it.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import anyio
import sniffio
from anyio.abc import SocketAttribute, SocketListener, SocketStream

__all__ = [
    "CLOSE_FLUSH_S",
    "READ_HIGH",
    "READ_LOW",
    "AioSocketStream",
    "accept",
    "connect_tcp",
    "inline_reading",
]

#: Reading the socket pauses when more than this many received bytes wait to be read ...
READ_HIGH = 256 * 1024
#: ... and resumes when the reader has brought them down to this.
READ_LOW = 64 * 1024
#: The most one read of the socket takes.
READ_CHUNK = 64 * 1024
#: The longest ``aclose`` lets the transport flush its write buffer before aborting it.
CLOSE_FLUSH_S = 1.0
#: anyio's ``connect_tcp`` waits this long before trying the next address (happy eyeballs).
_HAPPY_EYEBALLS_S = 0.25


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


#: The read buffer of each event loop.  Safe to share between its connections: the
#: transport fills it and calls ``buffer_updated`` in one callback, which copies out.
_read_buffers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, memoryview] = weakref.WeakKeyDictionary()


def _read_buffer(loop: asyncio.AbstractEventLoop) -> memoryview:
    buffer = _read_buffers.get(loop)
    if buffer is None:
        buffer = _read_buffers[loop] = memoryview(bytearray(READ_CHUNK))
    return buffer


class _Protocol(asyncio.BufferedProtocol):
    """Receives for one :class:`AioSocketStream`: buffers, flow control and wake-ups."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.buffer = _read_buffer(loop)
        self.on_data: Callable[[], None] | None = None  # AioSocketStream.read_inline
        self.inline_error: BaseException | None = None
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.reading_paused = False
        self.writing_paused = False
        self.eof = False
        self.lost = False
        self.error: BaseException | None = None
        self.read_waiter: asyncio.Future[None] | None = None
        self.write_waiter: asyncio.Future[None] | None = None
        self.closed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        data = self.buffer[:nbytes].tobytes()
        idle = not self.chunks
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > READ_HIGH and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        waiter = self.read_waiter
        if idle and self.on_data is not None and waiter is not None and not waiter.done():
            self._read_inline()
            if not self.chunks and self.inline_error is None:
                return  # all taken: the reader task sleeps on
        _wake(waiter)

    def _read_inline(self) -> None:
        on_data = self.on_data
        assert on_data is not None
        # Outside any task: tell sniffio (and so anyio) which library runs this callback.
        named = sniffio.thread_local.name
        sniffio.thread_local.name = "asyncio"
        try:
            on_data()
        except BaseException as exc:  # raised in the reader task instead (see read_inline)
            self.inline_error = exc
            self.on_data = None
        finally:
            sniffio.thread_local.name = named

    def eof_received(self) -> bool:
        self.eof = True
        _wake(self.read_waiter)
        return True  # keep the transport open: this side may still send (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.error = exc
        _wake(self.read_waiter)
        _wake(self.write_waiter)
        self.closed.set()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        _wake(self.write_waiter)


class AioSocketStream(SocketStream):
    """One TCP connection on an asyncio transport; see the module docstring for its guarantees."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._closed = False
        self._receiving = False
        self._sending = False

    @property
    def _raw_socket(self) -> socket.socket:
        return self._transport.get_extra_info("socket")

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """What is buffered (up to *max_bytes*) at once, or wait for the next bytes."""
        if max_bytes < 1:
            raise ValueError("max_bytes must be a positive integer")
        if self._receiving:
            raise anyio.BusyResourceError("reading from")
        p = self._protocol
        if not p.chunks:
            await self._wait_readable(p)
        if p.inline_error is not None:
            error, p.inline_error = p.inline_error, None
            raise error
        if self._closed:
            raise anyio.ClosedResourceError
        if not p.chunks:
            if p.error is not None:
                raise anyio.BrokenResourceError from p.error
            raise anyio.EndOfStream
        return self._take(p, max_bytes)

    def receive_nowait(self, max_bytes: int = 65536) -> bytes:
        """What is buffered now (up to *max_bytes*); ``anyio.WouldBlock`` if nothing is.

        The end of the stream and errors are left to :meth:`receive` (this raises
        ``WouldBlock`` for them too).
        """
        data = self.take_buffered(max_bytes)
        if not data:
            raise anyio.WouldBlock
        return data

    def take_buffered(self, max_bytes: int = 65536) -> bytes:
        """What is buffered now (up to *max_bytes*), ``b""`` if nothing is: :meth:`read_inline`'s
        callback takes its bytes with this (no exception when it has taken them all)."""
        p = self._protocol
        if self._closed or not p.chunks:
            return b""
        return self._take(p, max_bytes)

    def read_inline(self, on_data: Callable[[], None] | None) -> None:
        """Have *on_data* take new bytes as they arrive, without waking the task in ``receive``.

        While a task waits in :meth:`receive` with nothing buffered, the transport's
        read callback calls *on_data* (synchronously, outside any task), which takes
        what it can with :meth:`take_buffered`; if it leaves bytes behind, the waiting
        task is woken as usual.  This saves the reader's scheduling round per message;
        order is kept because it only runs when no bytes wait.  If *on_data* raises, the
        waiting ``receive`` raises that exception (so *on_data* can end the reading
        too), and inline reading stops.  None turns it off.
        """
        self._protocol.on_data = on_data

    def _take(self, p: _Protocol, max_bytes: int) -> bytes:
        chunks = p.chunks
        chunk = chunks.popleft()
        if len(chunk) > max_bytes:
            chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        elif chunks and len(chunk) + len(chunks[0]) <= max_bytes:
            # Several reads arrived since the last receive: hand them over as one.
            parts = [chunk]
            size = len(chunk)
            while chunks and size + len(chunks[0]) <= max_bytes:
                part = chunks.popleft()
                parts.append(part)
                size += len(part)
            chunk = b"".join(parts)
        p.buffered -= len(chunk)
        if p.reading_paused and p.buffered <= READ_LOW:
            p.reading_paused = False
            self._transport.resume_reading()
        return chunk

    async def _wait_readable(self, p: _Protocol) -> None:
        """Wait until bytes, the end, an error or ``aclose``; a cancelled wait loses nothing."""
        self._receiving = True
        try:
            while not p.chunks and not p.eof and not p.lost and not self._closed and p.inline_error is None:
                waiter = p.read_waiter = p.loop.create_future()
                await waiter
        finally:
            p.read_waiter = None
            self._receiving = False

    async def send(self, item: bytes) -> None:
        """Write *item* whole, at once; wait first only while the transport's buffer is full."""
        if self._sending:
            raise anyio.BusyResourceError("writing to")
        p = self._protocol
        if p.writing_paused:
            self._sending = True
            try:
                while p.writing_paused and not p.lost and not self._closed:
                    waiter = p.write_waiter = p.loop.create_future()
                    await waiter
            finally:
                p.write_waiter = None
                self._sending = False
        self._write(item)

    def _write(self, item: bytes) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        p = self._protocol
        if p.lost or self._transport.is_closing():
            raise anyio.BrokenResourceError from p.error
        try:
            self._transport.write(item)
        except RuntimeError as exc:  # after send_eof
            raise anyio.BrokenResourceError from exc

    def write_now(self, data: bytes) -> int:
        """Write *data* without waiting when nothing is buffered ahead of it; the bytes taken (all or 0).

        The direct path of ``sendnow.direct_writer``: it never raises, a broken or
        busy connection just takes nothing and the caller queues the frame instead.
        """
        p = self._protocol
        if (
            self._closed
            or self._sending
            or p.lost
            or p.writing_paused
            or self._transport.get_write_buffer_size()
            or self._transport.is_closing()
        ):
            return 0
        try:
            self._transport.write(data)
        except RuntimeError:
            return 0
        return len(data)

    async def send_eof(self) -> None:
        try:
            self._transport.write_eof()
        except OSError:
            pass

    async def aclose(self) -> None:
        """Close; the transport flushes its buffer for up to ``CLOSE_FLUSH_S``, then is aborted."""
        if self._closed:
            return
        self._closed = True
        p = self._protocol
        _wake(p.read_waiter)
        _wake(p.write_waiter)
        if p.lost:
            return
        self._transport.close()
        try:
            with anyio.move_on_after(CLOSE_FLUSH_S):
                await p.closed.wait()
        finally:
            if not p.lost:
                self._transport.abort()  # a peer that does not read, or a cancelled close


@contextmanager
def inline_reading(stream: object, on_data: Callable[[Callable[[int], bytes]], None]) -> Iterator[None]:
    """For the block: on our asyncio stream, ``on_data(take)`` handles arriving bytes in the
    read callback (:meth:`AioSocketStream.read_inline`; *take* is its ``take_buffered``).
    Any other stream (trio's, TLS) is read by the task alone, as before."""
    if not isinstance(stream, AioSocketStream):
        yield
        return
    stream.read_inline(functools.partial(on_data, stream.take_buffered))
    try:
        yield
    finally:
        stream.read_inline(None)


def _open(transport: asyncio.BaseTransport, protocol: Any) -> AioSocketStream:
    return AioSocketStream(cast(asyncio.Transport, transport), cast(_Protocol, protocol))


async def connect_tcp(host: str, port: int) -> SocketStream:
    """A TCP connection: :class:`AioSocketStream` on asyncio, anyio's stream elsewhere (trio)."""
    if sniffio.current_async_library() != "asyncio":
        return await anyio.connect_tcp(host, port)
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(
        lambda: _Protocol(loop), host, port, happy_eyeballs_delay=_HAPPY_EYEBALLS_S
    )
    return _open(transport, protocol)


async def accept(listener: SocketListener) -> SocketStream:
    """The next connection of an anyio TCP *listener*, as :class:`AioSocketStream` on asyncio.

    Raises what ``listener.accept()`` raises: ``OSError`` for a failed accept (out of
    descriptors...), ``anyio.ClosedResourceError`` once the listener is closed.
    """
    if sniffio.current_async_library() != "asyncio":
        return await listener.accept()
    loop = asyncio.get_running_loop()
    server = listener.extra(SocketAttribute.raw_socket)
    if server.fileno() < 0:
        raise anyio.ClosedResourceError
    try:
        sock, _ = await loop.sock_accept(server)
    except asyncio.CancelledError:
        # A cancelled sock_accept may leave its reader registered (bpo-41317).
        try:
            loop.remove_reader(server)
        except (ValueError, NotImplementedError):
            pass
        raise
    except OSError:
        if server.fileno() < 0:
            raise anyio.ClosedResourceError from None
        raise
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport, protocol = await loop.connect_accepted_socket(lambda: _Protocol(loop), sock)
    except BaseException:
        sock.close()
        raise
    return _open(transport, protocol)
