"""``SignalBuffer``: the bounded FIFO between a bus and one subscription's pump.

An anyio memory object stream would do, but its ``receive`` makes a scheduling
round before it looks at the buffer, and a pump pays that once per batch on
every hop of every call.  This buffer is a deque with two kinds of waiters:
``get`` returns at once when something is queued and otherwise waits on an
event; ``put`` waits (FIFO) while the buffer is full — the backpressure that
slows a publisher down to the speed of the slowest subscriber instead of
growing memory.  ``close`` wakes everyone: queued items are still handed out,
then ``get`` raises ``EndOfStream``; ``put`` on a closed buffer is a no-op.

A network bus's reader must never wait for one subscription (every other
subscription on the connection, STOP included, would wait behind it), so it
files with ``offer`` instead: past ``max_items`` it keeps queueing up to the
hard limits ``max_pending`` items and ``max_pending_bytes`` bytes (the sizes the
reader reports), and only beyond them refuses; the caller drops and counts.
"""

from __future__ import annotations

import sys
from collections import deque
from typing import Generic, TypeVar

import anyio

__all__ = ["SignalBuffer"]

T = TypeVar("T")


class SignalBuffer(Generic[T]):
    """At most ``max_items`` queued by ``put`` (``max_pending`` by ``offer``); one reader."""

    __slots__ = (
        "_bytes",
        "_closed",
        "_getter",
        "_items",
        "_putters",
        "_sizes",
        "max_items",
        "max_pending",
        "max_pending_bytes",
    )

    def __init__(
        self, max_items: int, *, max_pending: int | None = None, max_pending_bytes: int | None = None
    ) -> None:
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        self.max_items: int = max_items
        self.max_pending: int = max_items if max_pending is None else max_pending
        if self.max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self.max_pending_bytes: int = max_pending_bytes if max_pending_bytes is not None else sys.maxsize
        if self.max_pending_bytes < 1:
            raise ValueError("max_pending_bytes must be >= 1")
        self._items: deque[T] = deque()
        # The size of each queued item (0 when put without one), kept only with a byte limit.
        self._sizes: deque[int] | None = deque() if max_pending_bytes is not None else None
        self._bytes = 0
        self._getter: anyio.Event | None = None
        self._putters: deque[anyio.Event] = deque()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending_bytes(self) -> int:
        """The sum of the sizes given to ``offer`` for what is queued now."""
        return self._bytes

    def put_nowait(self, item: T) -> bool:
        """Queue *item*; False (nothing queued) when full.  Dropped silently once closed."""
        if self._closed:
            return True
        if len(self._items) >= self.max_items:
            return False
        self._items.append(item)
        if self._sizes is not None:
            self._sizes.append(0)
        getter = self._getter
        if getter is not None:
            self._getter = None
            getter.set()
        return True

    def offer(self, item: T, size: int = 0) -> bool:
        """Queue *item* without waiting, up to the hard limits; False (nothing queued) beyond them.

        One item larger than ``max_pending_bytes`` is still taken into an empty buffer.
        """
        if self._closed:
            return True
        items = self._items
        if len(items) >= self.max_pending or (self._bytes and self._bytes + size > self.max_pending_bytes):
            return False
        items.append(item)
        if self._sizes is not None:
            self._sizes.append(size)
            self._bytes += size
        getter = self._getter
        if getter is not None:
            self._getter = None
            getter.set()
        return True

    async def put(self, item: T) -> None:
        """Queue *item*, waiting while the buffer is full."""
        while not self.put_nowait(item):
            ev = anyio.Event()
            self._putters.append(ev)
            try:
                await ev.wait()
            except BaseException:
                try:
                    self._putters.remove(ev)
                except ValueError:  # room was made for us: pass it on
                    self._wake_putter()
                raise

    def _wake_putter(self) -> None:
        if self._putters:
            self._putters.popleft().set()

    def get_nowait(self) -> T:
        """The oldest item; ``WouldBlock`` when empty, ``EndOfStream`` when empty and closed."""
        if self._items:
            item = self._items.popleft()
            if self._sizes is not None:
                self._bytes -= self._sizes.popleft()
            if self._putters:
                self._wake_putter()
            return item
        if self._closed:
            raise anyio.EndOfStream
        raise anyio.WouldBlock

    async def get(self) -> T:
        """The oldest item, waiting while empty; ``EndOfStream`` once closed and drained."""
        while True:
            try:
                return self.get_nowait()
            except anyio.WouldBlock:
                ev = self._getter = anyio.Event()
                try:
                    await ev.wait()
                finally:
                    if self._getter is ev:
                        self._getter = None

    def close(self) -> None:
        """No more puts; the reader drains what is queued, then sees ``EndOfStream``."""
        self._closed = True
        getter, self._getter = self._getter, None
        if getter is not None:
            getter.set()
        while self._putters:
            self._putters.popleft().set()
