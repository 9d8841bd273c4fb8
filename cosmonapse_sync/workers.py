"""Worker threads for sync handlers and plain-function Neurons, owned by one portal.

Why not ``anyio.to_thread``: its threads belong to the event loop library (trio keeps
a process-wide cache that lingers after the loop ends), so ``close()`` could not
promise that no thread of ours is left.  These threads are daemons (a stuck
handler cannot hold up interpreter exit), named ``cosmonapse-sync-worker-N``,
started on demand up to a limit, and joined with a deadline when the portal ends.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
from anyio.lowlevel import RunVar

__all__ = ["WORKER_POOL", "WorkerPool", "run_in_worker"]

log: logging.Logger = logging.getLogger("cosmonapse_sync.workers")

#: The pool of the portal running the current event loop (unset outside a facade's portal).
WORKER_POOL: RunVar[WorkerPool] = RunVar("cosmonapse_sync_worker_pool")

_STOP = object()
Soon = Callable[..., object]


class WorkerPool:
    """Up to ``limit`` daemon threads fed from one queue; results come back through ``soon``."""

    def __init__(self, soon: Soon, *, limit: int = 40, name: str = "cosmonapse-sync-worker") -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._soon = soon
        self._limit = limit
        self._name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []  # allowed: the facade portal (its worker threads)
        self._idle = 0  # threads waiting for an item
        self._queued = 0  # items not yet taken
        self._closed = False

    def _submit(self, item: Any) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("worker pool is closed")
            self._queued += 1
            if self._queued > self._idle and len(self._threads) < self._limit:
                n = len(self._threads) + 1
                t = threading.Thread(  # allowed: the facade portal (its worker threads)
                    target=self._work, name=f"{self._name}-{n}", daemon=True
                )
                self._threads.append(t)
                t.start()
        self._queue.put(item)

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            item = self._queue.get()
            with self._lock:
                self._idle -= 1
                self._queued -= 1
            if item is _STOP:
                return
            item()

    async def run(
        self, fn: Callable[..., Any], *args: Any, on_cancel: Callable[[], None] | None = None
    ) -> Any:
        """Run ``fn(*args)`` in a worker thread, in a copy of the caller's context.

        If the awaiting task is cancelled, ``on_cancel`` is called (so a cooperative
        function can notice) and the thread is still waited for: a thread cannot be
        interrupted, and work must not outlive its task.
        """
        done = anyio.Event()
        ctx = contextvars.copy_context()
        box: list[Any] = [None, None]
        soon = self._soon

        def job() -> None:
            try:
                box[0] = ctx.run(fn, *args)
            except BaseException as exc:
                box[1] = exc
            try:
                soon(done.set)
            except Exception:  # the loop is gone: nobody is waiting any more
                pass

        self._submit(job)
        try:
            await done.wait()
        except anyio.get_cancelled_exc_class():
            if on_cancel is not None:
                on_cancel()
            with anyio.CancelScope(shield=True):
                await done.wait()
            raise
        if box[1] is not None:
            raise box[1]
        return box[0]

    def close(self, deadline: float) -> bool:
        """Stop every thread; wait until ``deadline`` (``time.monotonic()``); True if all ended."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
            self._queued += len(threads)
        for _ in threads:
            self._queue.put(_STOP)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            log.warning("worker threads still busy after the close deadline: %s", ", ".join(alive))
        return not alive


async def run_in_worker(
    fn: Callable[..., Any], *args: Any, on_cancel: Callable[[], None] | None = None
) -> Any:
    """``fn(*args)`` in the portal's worker threads, or anyio's outside a portal."""
    try:
        pool = WORKER_POOL.get()
    except LookupError:
        return await anyio.to_thread.run_sync(fn, *args)
    return await pool.run(fn, *args, on_cancel=on_cancel)
