"""Write to a socket at once, without a scheduling round, when nothing is queued ahead.

Every bus connection has one writer task draining a bounded outbox, so a frame is
only ever written whole and a cancelled publish has queued nothing.  Handing each
frame to that task costs a task switch, and ``await stream.send()`` costs another
(anyio yields once per send on both backends).  When the outbox is empty and the
writer is idle there is nothing to keep in order, so the frame can go straight to
the kernel instead: ``direct_writer(stream)`` returns a *synchronous* function that
writes what the socket takes now and returns how many bytes it took.  The caller
queues the rest (or all of it, on 0) for the writer as before, so order, outbox
bounds and backpressure are unchanged, and a publish cannot be cancelled half-way
through a write that never awaits.

* our asyncio stream (``aiostream.AioSocketStream``): its ``write_now``, the same
  rule as the next item.
* asyncio: the stream's transport writes (it sends at once when its own buffer is
  empty, and keeps the rest in order).  Used only while that buffer is empty and
  writing is not paused, so it holds at most the remainder of one frame.
* trio: a non-blocking ``send`` on the socket itself.
* any other stream (TLS, a test double): no direct path; ``None``.

The stream classes are anyio's own; their private attributes are looked up once and
any mismatch (another anyio version) just means no direct path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .aiostream import AioSocketStream

__all__ = ["DIRECT_IDLE_S", "DirectGate", "DirectWriter", "direct_writer"]

#: Only a connection that has written nothing for this long writes directly: a request
#: after a quiet spell leaves at once, while a busy connection (a stream of tokens, a
#: burst of replies) keeps coalescing its frames into the writer task's sends, one
#: syscall for many — writing each frame directly there costs throughput.
DIRECT_IDLE_S = 100e-6
#: A frame queued this soon after a direct write means the connection is in a burst ...
BURST_S = 500e-6
#: ... and then it writes nothing directly for this long (each burst would otherwise
#: leave as one small packet plus the rest, and every hop after it reads twice).
BURST_HOLD_S = 20e-3

#: Writes a prefix of its argument without waiting; returns the number of bytes taken.
DirectWriter = Callable[[bytes], int]


class DirectGate:
    """When one connection may write directly: after a quiet spell, and not while in bursts."""

    __slots__ = ("_direct_at", "_hold_until", "last_write")

    def __init__(self) -> None:
        self.last_write: float = 0.0  # the writer task sets it after each send
        self._direct_at = 0.0  # the last direct write, until a queued frame follows it
        self._hold_until = 0.0

    def open(self) -> float:
        """Now, if a direct write may go now (and is counted as made); else 0.0."""
        now = time.monotonic()
        if now - self.last_write < DIRECT_IDLE_S or now < self._hold_until:
            return 0.0
        self.last_write = self._direct_at = now
        return now

    def queued(self) -> None:
        """A frame went to the outbox: right behind a direct write, hold direct writes off."""
        if self._direct_at:
            now = time.monotonic()
            if now - self._direct_at < BURST_S:
                self._hold_until = now + BURST_HOLD_S
            self._direct_at = 0.0


def direct_writer(stream: object) -> DirectWriter | None:
    """A synchronous writer for *stream* when it is a plain TCP/Unix socket stream, else None."""
    if isinstance(stream, AioSocketStream):
        return stream.write_now
    module = type(stream).__module__
    if module == "anyio._backends._asyncio":
        return _asyncio_writer(stream)
    if module == "anyio._backends._trio":
        return _trio_writer(stream)
    return None


def _asyncio_writer(stream: Any) -> DirectWriter | None:
    transport = getattr(stream, "_transport", None)
    protocol = getattr(stream, "_protocol", None)
    write_event = getattr(protocol, "write_event", None)
    if transport is None or write_event is None or not hasattr(transport, "get_write_buffer_size"):
        return None
    buffered = transport.get_write_buffer_size
    closing = transport.is_closing
    writable = write_event.is_set
    write = transport.write

    def send(data: bytes) -> int:
        if buffered() or closing() or not writable() or getattr(stream, "_closed", True):
            return 0
        try:
            write(data)
        except RuntimeError:  # the transport is closing: the writer task finds out and reports
            return 0
        return len(data)

    return send


def _trio_writer(stream: Any) -> DirectWriter | None:
    try:
        sock = stream._raw_socket
    except Exception:
        return None
    raw_send = getattr(sock, "send", None)
    if raw_send is None:
        return None

    def send(data: bytes) -> int:
        if stream._closed:
            return 0
        try:
            return raw_send(data)
        except OSError:  # would block, or broken: the writer task sends or reports it
            return 0

    return send
