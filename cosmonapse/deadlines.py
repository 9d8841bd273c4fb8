"""``Deadlines``: one timer task per Dendrite instead of a cancel scope per wait.

Every ``Pathway.wait(timeout_s)`` needs a deadline.  A deadline cancel scope costs
about 10 µs on asyncio (a timer handle plus the scope's bookkeeping) and
``dispatch_and_wait`` pays it on every call.  Here a wait registers a ``Timer``
in a bucket (``resolution`` wide) and a single task, living in the Dendrite's task
group, wakes when the earliest bucket is due and fires its timers: each sets its
``expired`` flag and wakes its waiter.  Registering and cancelling are a set
insert and discard.  A timer fires at most ``resolution`` late, never early.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

import anyio

from .prims import Prims, Waitable

__all__ = ["Deadlines", "Timer"]


class Timer:
    """One registered deadline; ``target`` is the event to set when it fires."""

    __slots__ = ("_owner", "expired", "key", "target")

    def __init__(self, owner: Deadlines, key: int) -> None:
        self._owner = owner
        self.key: int = key
        self.expired: bool = False
        self.target: Waitable | None = None

    def fire(self) -> None:
        """Mark expired and wake the waiter."""
        self.expired = True
        if self.target is not None:
            self.target.set()

    def cancel(self) -> None:
        """Never fire (the wait ended first)."""
        self._owner._discard(self)


class Deadlines:
    """Bucketed deadlines served by ``run()`` (start it in a task group)."""

    __slots__ = ("_buckets", "_heap", "_now", "_sleeping_until", "_wake", "new_event", "resolution")

    def __init__(self, resolution: float = 0.002) -> None:
        self.resolution: float = resolution
        prims = Prims.current_or_generic()
        self._now = prims.now
        #: The loop's own one-waiter event, for the waits these deadlines bound (one per wait).
        self.new_event: Callable[[], Waitable] = prims.waiter
        self._buckets: dict[int, set[Timer]] = {}
        self._heap: list[int] = []
        self._wake = anyio.Event()
        self._sleeping_until: int | None = None

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets.values())

    def schedule(self, delay: float) -> Timer:
        """A Timer that fires *delay* seconds from now (rounded up to the resolution)."""
        key = math.ceil((self._now() + max(delay, 0.0)) / self.resolution)
        timer = Timer(self, key)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = set()
            heapq.heappush(self._heap, key)
            if self._sleeping_until is None or key < self._sleeping_until:
                self._wake.set()
        bucket.add(timer)
        return timer

    def _discard(self, timer: Timer) -> None:
        bucket = self._buckets.get(timer.key)
        if bucket is not None:
            bucket.discard(timer)
            if not bucket:
                del self._buckets[timer.key]  # its heap entry is dropped lazily

    async def run(self) -> None:
        """Fire due timers until cancelled."""
        heap, buckets = self._heap, self._buckets
        while True:
            while heap and heap[0] not in buckets:
                heapq.heappop(heap)
            if not heap:
                self._sleeping_until = None
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            key = heap[0]
            delay = key * self.resolution - self._now()
            if delay > 0:
                self._sleeping_until = key
                with anyio.move_on_after(delay):
                    await self._wake.wait()
                if self._wake.is_set():
                    self._wake = anyio.Event()
                continue
            heapq.heappop(heap)
            for timer in buckets.pop(key, ()):
                timer.fire()
