"""``LoopRef``: run a callback on a given event loop from any thread, on asyncio or trio.

The test bus connects clients that may live on different event loops (a test's
own loop, the portal thread of a ``SyncDendrite``, a worker run in the
background): a Signal published on one loop is handed to a subscriber on
another through the subscriber's ``LoopRef``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import sniffio

__all__ = ["LoopRef"]


class LoopRef:
    """The running event loop of the caller, captured so other threads can schedule onto it."""

    __slots__ = ("_soon", "backend", "thread_id")

    def __init__(self) -> None:
        self.backend: str = sniffio.current_async_library()
        self.thread_id: int = threading.get_ident()
        if self.backend == "trio":
            import trio

            self._soon: Callable[[Callable[[], Any]], Any] = trio.lowlevel.current_trio_token().run_sync_soon
        else:
            import asyncio

            self._soon = asyncio.get_running_loop().call_soon_threadsafe

    def is_current(self) -> bool:
        """True when called from this loop's own thread."""
        return threading.get_ident() == self.thread_id

    def soon(self, fn: Callable[[], Any]) -> bool:
        """Schedule *fn()* on the loop; False when the loop is gone (closed or finished)."""
        try:
            self._soon(fn)
        except RuntimeError:  # asyncio: loop closed; trio: RunFinishedError is a RuntimeError
            return False
        return True
