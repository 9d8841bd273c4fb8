"""``SignalBuffer``: the bounded FIFO between a bus and one subscription's pump.

An anyio memory object stream would do, but its ``receive`` makes a scheduling
round before it looks at the buffer, and a pump pays that once per batch on
every hop of every call.  This buffer is a deque with two kinds of waiters:
``get`` returns at once when something is queued and otherwise waits on an
event; ``put`` waits (FIFO) while the buffer is full — the backpressure that
slows a publisher down to the speed of the slowest subscriber instead of
growing memory.  ``close`` wakes everyone: queued items are still handed out,
then ``get`` raises ``EndOfStream``; ``put`` on a closed buffer is a no-op.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

import anyio

__all__ = ["SignalBuffer"]

T = TypeVar("T")


class SignalBuffer(Generic[T]):
    """At most ``max_items`` queued; one reader, any number of writers."""

    __slots__ = ("_closed", "_getter", "_items", "_putters", "max_items")

    def __init__(self, max_items: int) -> None:
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        self.max_items = max_items
        self._items: deque[T] = deque()
        self._getter: anyio.Event | None = None
        self._putters: deque[anyio.Event] = deque()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put_nowait(self, item: T) -> bool:
        """Queue *item*; False (nothing queued) when full.  Dropped silently once closed."""
        if self._closed:
            return True
        if len(self._items) >= self.max_items:
            return False
        self._items.append(item)
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
