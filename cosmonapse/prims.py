"""The event loop's own primitives for the per-call hot path, looked up once per loop.

``anyio.Event()``, ``anyio.CancelScope()`` and ``anyio.current_time()`` each find the
running async library first (sniffio, then anyio's backend table) and then build a
wrapper around that library's object.  That lookup is the same every time, and a
``dispatch_and_wait`` pays it about five times.  ``Prims.current()``, called once by
each long-lived object when it starts inside the loop (the runner pool, the deadline
timer), hands back what the lookup would find, so the hot path calls it directly:

* ``waiter()``: an event for exactly one waiter (a runner's slot, one Pathway read),
  lighter than the library's own event — a bare future of the loop on asyncio, trio's
  ``wait_task_rescheduled``/``reschedule`` on trio; a second waiter is refused, and
  anyio's cancel scopes cancel a task waiting on it as they do on ``anyio.Event``;
* ``cancel_scope()``: anyio's ``CancelScope`` class of that backend, built without
  the lookup (the object is the one ``anyio.CancelScope()`` returns);
* ``now()``: the clock anyio's deadlines use (``trio.current_time``, the loop's
  ``time``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, Protocol

import anyio
import sniffio

__all__ = ["Prims", "Waitable"]


class Waitable(Protocol):
    """An event as the hot path uses it (anyio's, asyncio's and trio's all are one)."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    async def wait(self) -> object: ...


class Prims:
    """The running library's one-waiter event, cancel scope class and clock."""

    __slots__ = ("cancel_scope", "library", "now", "waiter")

    def __init__(
        self,
        library: str,
        waiter: Callable[[], Waitable],
        cancel_scope: type[anyio.CancelScope],
        now: Callable[[], float],
    ) -> None:
        self.library: str = library
        #: An event for exactly one waiter (a runner's slot, a Pathway read).
        self.waiter: Callable[[], Waitable] = waiter
        self.cancel_scope: type[anyio.CancelScope] = cancel_scope
        self.now: Callable[[], float] = now

    @classmethod
    def current(cls) -> Prims:
        """The primitives of the running loop (call it from inside the loop)."""
        library = sniffio.current_async_library()
        if library == "asyncio":
            # the loop's clock and futures: bound per loop, never cached across loops
            loop = asyncio.get_running_loop()
            return cls(library, functools.partial(_AsyncioWaiter, loop), type(anyio.CancelScope()), loop.time)
        prims = _BY_LIBRARY.get(library)
        if prims is None:
            prims = _BY_LIBRARY[library] = cls._build(library)
        if library == "trio":
            # this run's clock, called directly: trio.current_time goes through two more calls
            import trio.lowlevel

            clock = trio.lowlevel.current_clock()
            return cls(library, prims.waiter, prims.cancel_scope, clock.current_time)
        return prims

    @classmethod
    def current_or_generic(cls) -> Prims:
        """``current()`` inside a loop; outside one (an object built before the loop starts)
        anyio's own calls, which find the library each time they are used."""
        try:
            return cls.current()
        except sniffio.AsyncLibraryNotFoundError:
            return cls._build("")

    @classmethod
    def _build(cls, library: str) -> Prims:
        if library == "trio":
            import trio
            import trio.lowlevel

            global _trio_reschedule, _trio_checkpoint, _trio_current_task, _trio_wait_rescheduled
            global _TRIO_ABORT_SUCCEEDED
            _trio_reschedule = trio.lowlevel.reschedule
            _trio_checkpoint = trio.lowlevel.checkpoint
            _trio_current_task = trio.lowlevel.current_task
            _trio_wait_rescheduled = trio.lowlevel.wait_task_rescheduled
            _TRIO_ABORT_SUCCEEDED = trio.lowlevel.Abort.SUCCEEDED
            return cls(library, _TrioWaiter, type(anyio.CancelScope()), trio.current_time)
        # outside a loop, or a backend anyio may grow: anyio's generic calls
        return cls(library, anyio.Event, anyio.CancelScope, anyio.current_time)


# trio's parking calls, bound when a trio loop first asks (importing trio is not free)
_trio_reschedule: Any = None
_trio_checkpoint: Any = None
_trio_current_task: Any = None
_trio_wait_rescheduled: Any = None
_TRIO_ABORT_SUCCEEDED: Any = None


class _TrioWaiter:
    """A one-waiter event on trio's own parking calls (no ParkingLot, no task set)."""

    __slots__ = ("_flag", "_task")

    def __init__(self) -> None:
        self._flag = False
        self._task: Any = None

    def set(self) -> None:
        if not self._flag:
            self._flag = True
            task, self._task = self._task, None
            if task is not None:
                _trio_reschedule(task)

    def is_set(self) -> bool:
        return self._flag

    def clear(self) -> None:
        """Unset, for reuse by the task that waits on it (never while it waits)."""
        self._flag = False

    def _abort(self, _raise_cancel: Any) -> Any:
        self._task = None
        return _TRIO_ABORT_SUCCEEDED

    async def wait(self) -> None:
        if self._flag:
            await _trio_checkpoint()
            return
        if self._task is not None:
            raise RuntimeError("a one-waiter event has a waiter already")
        self._task = _trio_current_task()
        await _trio_wait_rescheduled(self._abort)


class _AsyncioWaiter:
    """A one-waiter event on a bare future of the running loop (no deque, no loop lookup per wait)."""

    __slots__ = ("_flag", "_future", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._flag = False
        self._future: asyncio.Future[None] | None = None

    def set(self) -> None:
        if not self._flag:
            self._flag = True
            future, self._future = self._future, None
            if future is not None and not future.done():
                future.set_result(None)

    def is_set(self) -> bool:
        return self._flag

    def clear(self) -> None:
        """Unset, for reuse by the task that waits on it (never while it waits)."""
        self._flag = False

    async def wait(self) -> None:
        if self._flag:
            await asyncio.sleep(0)  # a checkpoint, as anyio's and asyncio's events have when set
            return
        if self._future is not None:
            raise RuntimeError("a one-waiter event has a waiter already")
        future = self._future = self._loop.create_future()
        try:
            await future
        finally:
            self._future = None


#: Per library, its loop-independent parts (trio: the clock is bound per run in ``current``).
_BY_LIBRARY: dict[str, Prims] = {}
