"""The event loop's own primitives for the per-call hot path, looked up once per loop.

``anyio.Event()``, ``anyio.CancelScope()`` and ``anyio.current_time()`` each find the
running async library first (sniffio, then anyio's backend table) and then build a
wrapper around that library's object.  That lookup is the same every time, and a
``dispatch_and_wait`` pays it about five times.  ``Prims.current()``, called once by
each long-lived object when it starts inside the loop (the runner pool, the deadline
timer), hands back what the lookup would find, so the hot path calls it directly:

* ``event()``: the library's own event — ``trio.Event`` on trio, ``asyncio.Event`` on
  asyncio (anyio's cancel scopes cancel a task waiting on either, as they do on
  anyio's wrapper; ``set()``/``is_set()``/``wait()`` behave the same);
* ``cancel_scope()``: anyio's ``CancelScope`` class of that backend, built without
  the lookup (the object is the one ``anyio.CancelScope()`` returns);
* ``now()``: the clock anyio's deadlines use (``trio.current_time``, the loop's
  ``time``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import anyio
import sniffio

__all__ = ["Prims", "Waitable"]


class Waitable(Protocol):
    """An event as the hot path uses it (anyio's, asyncio's and trio's all are one)."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    async def wait(self) -> object: ...


class Prims:
    """The running library's event, cancel scope class and clock."""

    __slots__ = ("cancel_scope", "event", "library", "now")

    def __init__(
        self,
        library: str,
        event: Callable[[], Waitable],
        cancel_scope: type[anyio.CancelScope],
        now: Callable[[], float],
    ) -> None:
        self.library: str = library
        self.event: Callable[[], Waitable] = event
        self.cancel_scope: type[anyio.CancelScope] = cancel_scope
        self.now: Callable[[], float] = now

    @classmethod
    def current(cls) -> Prims:
        """The primitives of the running loop (call it from inside the loop)."""
        library = sniffio.current_async_library()
        if library == "asyncio":
            # the loop's clock: bound per loop, never cached across loops
            return cls(
                library,
                asyncio.Event,
                type(anyio.CancelScope()),
                asyncio.get_running_loop().time,
            )
        prims = _BY_LIBRARY.get(library)
        if prims is None:
            prims = _BY_LIBRARY[library] = cls._build(library)
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

            return cls(library, trio.Event, type(anyio.CancelScope()), trio.current_time)
        # outside a loop, or a backend anyio may grow: anyio's generic calls
        return cls(library, anyio.Event, anyio.CancelScope, anyio.current_time)


#: One ``Prims`` per library whose objects do not depend on the loop (trio's).
_BY_LIBRARY: dict[str, Prims] = {}
