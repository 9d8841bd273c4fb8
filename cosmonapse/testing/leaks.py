"""Leak checks: no task and no thread started by a test may outlive it.

Pool threads (anyio's and trio's worker threads) are kept for reuse after
their job, so an *idle* pool thread is not a leak; one still running a job
(a sync Neuron stuck in its thread, say) is.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from .harness import assert_no_leaked_tasks

__all__ = ["assert_no_leaked_threads", "no_leaks"]

#: Modules whose frames an idle pool thread's stack is made of.
_POOL_MODULES = ("threading", "queue", "anyio", "trio", "concurrent", "selectors", "_pytest", "sniffio")


def _idle_pool_thread(thread: threading.Thread) -> bool:
    """True when *thread* only waits inside thread-pool machinery (no user frame on its stack)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.split(".")[0] not in _POOL_MODULES:
            return False
        frame = frame.f_back
    return True


def _busy_new_threads(before: set[int]) -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.ident not in before
        and t.is_alive()
        and t is not threading.current_thread()
        and not _idle_pool_thread(t)
    ]


@contextmanager
def assert_no_leaked_threads(*, grace_s: float = 1.0) -> Iterator[None]:
    """Fail if a thread started inside the block is still busy *grace_s* seconds after it."""
    before = {t.ident for t in threading.enumerate() if t.ident is not None}
    yield
    deadline = time.monotonic() + grace_s
    busy = _busy_new_threads(before)
    while busy and time.monotonic() < deadline:
        busy[0].join(max(0.0, deadline - time.monotonic()))
        busy = _busy_new_threads(before)
    if busy:
        raise AssertionError(f"threads left running: {sorted(t.name for t in busy)}")


@asynccontextmanager
async def no_leaks(*, grace_s: float = 1.0) -> AsyncIterator[None]:
    """Tasks (in this event loop) and threads started inside the block must be gone after it."""
    with assert_no_leaked_threads(grace_s=grace_s):
        async with assert_no_leaked_tasks():
            yield
