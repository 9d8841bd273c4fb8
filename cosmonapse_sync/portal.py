"""``Portal``: one event loop in one background thread, owning one async resource.

The facade needs a running event loop that outlives any one request, so blocking
code can hand it coroutines.  Doing that by hand (seed 000: a thread started at
import, ``time.sleep(0.5)``, ``run_coroutine_threadsafe(...).result(timeout=32)``)
breaks in four ways this module is built to avoid:

* **Start-up.**  Nothing starts at import.  The first call starts a thread named
  ``cosmonapse-portal...`` that runs ``anyio.run`` (asyncio or trio) and waits for
  the resource's readiness through a Future, never a sleep; a failed connect is
  raised to that caller and the next call tries again.
* **Ownership.**  One long-lived task in the portal thread sets the resource up
  inside an ``AsyncExitStack`` and tears it down from that same task, so a
  Synapse's ``connect`` and ``close`` happen in one task as anyio requires.
* **Fork.**  A loop's thread does not survive ``fork()``.  Each loop records its
  pid; ``os.register_at_fork`` drops every portal's loop in the child (and replaces
  its lock, which another thread may have held), and the child's next call starts
  a fresh one.  The parent's loop objects are parked, never used or finalised, so
  nothing in the child can write to the parent's sockets.
* **Cancellation.**  A call is a task in the portal under its own cancel scope.  If
  the caller is interrupted (``KeyboardInterrupt``) or its backstop deadline passes,
  the task is cancelled and the caller waits (bounded) for its cleanup to run, so
  work does not outlive the call.

The hot path is one ``call_soon_threadsafe`` (trio: ``run_sync_soon``), one task
and a bare lock as the caller's latch: no ``concurrent.futures.Future`` chain.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import logging
import os
import sys
import threading
import time
import weakref
from _thread import allocate_lock
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
from anyio.lowlevel import RunVar

from .errors import DeadlockError, FacadeClosedError, PortalTimeout
from .workers import WORKER_POOL, WorkerPool

__all__ = ["BACKENDS", "CURRENT_LOOP", "Portal", "PortalLoop", "check_caller"]

log: logging.Logger = logging.getLogger("cosmonapse_sync.portal")

BACKENDS = ("asyncio", "trio")
#: The portal loop running the current event loop (set inside a portal thread only).
CURRENT_LOOP: RunVar[PortalLoop] = RunVar("cosmonapse_sync_loop")

Setup = Callable[[AsyncExitStack], Awaitable[Any]]

_get_running_loop = asyncio._get_running_loop
#: Loops a fork() left behind in this process: referenced so no finaliser ever runs on them.
_ABANDONED: list[PortalLoop] = []
_PORTALS: weakref.WeakSet[Portal] = weakref.WeakSet()


def _running_async_library() -> str | None:
    if _get_running_loop() is not None:
        return "asyncio"
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        return "trio"
    return None


def _async_hint(what: str) -> str:
    name = what.split("(")[0]
    if name.startswith("Pathway."):
        return f"`await pathway.aio.{name.removeprefix('Pathway.')}(...)`"
    return f"`await facade.dendrite.{name}(...)`"


def check_caller(portal_ident: int | None, what: str) -> None:
    """Refuse to block where blocking deadlocks: the portal thread, or any event loop's thread."""
    if portal_ident is not None and threading.get_ident() == portal_ident:
        raise DeadlockError(
            f"{what} was called on the facade's own event loop thread (from async code run by the "
            "portal: an async handler, Neuron or hook), where it would wait for itself forever. "
            f"Use the async API there: {_async_hint(what)}."
        )
    lib = _running_async_library()
    if lib is not None:
        raise DeadlockError(
            f"{what} blocks, and this thread is running a {lib} event loop that it would stall "
            "(or deadlock). Use the async API from async code: a `cosmonapse.Dendrite` and "
            f"`await dendrite.{what.split('(')[0].removeprefix('Pathway.')}(...)`."
        )


class _Job:
    """One call: the coroutine function, its outcome, and a bare lock as the caller's latch."""

    __slots__ = ("args", "cancel_requested", "done", "exc", "fn", "lock", "ok", "result", "scope", "task")

    def __init__(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.lock = allocate_lock()
        self.lock.acquire()
        self.result: Any = None
        self.exc: BaseException | None = None
        self.ok = False
        self.done = False
        self.scope: anyio.CancelScope | None = None
        self.cancel_requested = False
        self.task: Any = None  # asyncio keeps only weak references to tasks

    async def run(self, loop: PortalLoop) -> None:
        try:
            with anyio.CancelScope() as scope:
                self.scope = scope
                if self.cancel_requested or loop.closing:
                    scope.cancel()
                self.result = await self.fn(*self.args)
                self.ok = True
        except Exception as exc:
            self.exc = exc
        finally:
            self.scope = None
            loop._job_finished(self)

    def cancel(self) -> None:
        """Loop thread only."""
        self.cancel_requested = True
        if self.scope is not None:
            self.scope.cancel()

    def finish(self, exc: BaseException | None = None) -> None:
        """Release the caller; loop/portal thread only, at most once."""
        if self.done:
            return
        if exc is not None and not self.ok and self.exc is None:
            self.exc = exc
        self.done = True
        self.lock.release()

    def outcome(self) -> Any:
        if self.ok:
            return self.result
        if self.exc is not None:
            raise self.exc
        raise FacadeClosedError("the call was cancelled because the facade is closing")


class PortalLoop:
    """One generation of a portal: a thread, its event loop, its resource, its worker threads."""

    def __init__(self, name: str, backend: str, setup: Setup, worker_threads: int) -> None:
        self.backend: str = backend
        self.name: str = name
        self.pid: int = os.getpid()
        self.ready: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.ident: int | None = None
        self.value: Any = None
        self.closing: bool = False
        self.finished: bool = False
        self.deadline: float | None = None
        self.pool: WorkerPool | None = None
        self.pending: set[_Job] = set()  # submitted and not yet collected (any thread)
        self._running: set[_Job] = set()  # started tasks (loop thread)
        self._early: list[tuple[_Job, contextvars.Context]] = []  # submitted during setup (loop thread)
        self._setup = setup
        self._worker_threads = worker_threads
        self._soon: Callable[..., Any] = _refuse
        self._spawn: Callable[[_Job, contextvars.Context], None] | None = None
        self._close_event: anyio.Event | None = None
        self._idle: anyio.Event | None = None
        self._main_scope: anyio.CancelScope | None = None
        self.thread: threading.Thread = threading.Thread(  # allowed: the facade portal
            target=self._thread_main, name=name, daemon=True
        )

    # -- the portal thread -------------------------------------------------
    def _thread_main(self) -> None:
        self.ident = threading.get_ident()
        try:
            anyio.run(self._main, backend=self.backend)
        except BaseException as exc:
            if not self.ready.done():
                self.ready.set_exception(exc)
            else:
                log.error("the portal's event loop failed", exc_info=True)
        finally:
            self.finished = True
            gone = FacadeClosedError("the facade's portal stopped before the call finished")
            for job in list(self.pending):
                job.finish(gone)
            if not self.ready.done():
                self.ready.set_exception(FacadeClosedError("the facade's portal stopped while starting"))
            if self.pool is not None:
                self.pool.close(self.deadline if self.deadline is not None else time.monotonic() + 5.0)

    async def _main(self) -> None:
        if self.backend == "trio":
            import trio

            self._soon = trio.lowlevel.current_trio_token().run_sync_soon
        else:
            self._soon = asyncio.get_running_loop().call_soon_threadsafe
        CURRENT_LOOP.set(self)
        self.pool = WorkerPool(self._soon, limit=self._worker_threads)
        WORKER_POOL.set(self.pool)
        self._close_event = anyio.Event()
        if self.closing:  # close() came before the loop was up
            return
        with anyio.CancelScope() as self._main_scope:
            async with AsyncExitStack() as stack:
                self.value = await self._setup(stack)
                async with self._spawner():
                    self.ready.set_result(self.value)
                    await self._close_event.wait()
                    for job in list(self._running):
                        job.cancel()

    @asynccontextmanager
    async def _spawner(self) -> AsyncIterator[None]:
        """Jobs become tasks here; leaving waits until every job task has ended."""
        if self.backend == "trio":
            import trio

            async with trio.open_nursery() as nursery:

                def spawn_trio(job: _Job, ctx: contextvars.Context) -> None:
                    ctx.run(nursery.start_soon, job.run, self)

                self._spawn = spawn_trio
                self._start_early()
                yield
                self._spawn = None
        else:
            loop = asyncio.get_running_loop()

            def spawn_asyncio(job: _Job, ctx: contextvars.Context) -> None:
                # allowed: a job task is tracked in _running and joined before the spawner exits;
                # loop.create_task keeps a call as cheap as run_coroutine_threadsafe (bench_sync)
                job.task = loop.create_task(job.run(self), context=ctx)  # allowed: joined at exit

            self._spawn = spawn_asyncio
            self._start_early()
            try:
                yield
            finally:
                self._spawn = None
                while self._running:
                    self._idle = anyio.Event()
                    await self._idle.wait()

    def _start_job(self, job: _Job, ctx: contextvars.Context) -> None:
        spawn = self._spawn
        if self.closing:
            job.finish(FacadeClosedError("the facade is closing"))
            return
        if spawn is None:  # submitted while the resource is being set up: start it once it is ready
            self._early.append((job, ctx))
            return
        self._running.add(job)
        try:
            spawn(job, ctx)
        except BaseException as exc:  # a closed nursery, say; never raise into the loop's callback runner
            self._running.discard(job)
            job.finish(exc)

    def _start_early(self) -> None:
        early, self._early = self._early, []
        for job, ctx in early:
            self._start_job(job, ctx)

    def _job_finished(self, job: _Job) -> None:
        self._running.discard(job)
        job.finish()
        if not self._running and self._idle is not None:
            self._idle.set()

    def _request_close(self) -> None:
        self.closing = True
        if self._close_event is not None:
            self._close_event.set()

    def _force_cancel(self) -> None:
        if self._main_scope is not None:
            self._main_scope.cancel()

    # -- any thread --------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def soon(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Schedule ``fn(*args)`` on the loop thread; False when the loop is gone."""
        try:
            self._soon(fn, *args)
        except RuntimeError:
            return False
        return True

    def call(
        self,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
        backstop_s: float | None = None,
        cancel_grace_s: float = 5.0,
        what: str = "this call",
    ) -> Any:
        """Run ``await fn(*args)`` as a task in this loop, in a copy of the caller's context.

        ``backstop_s`` bounds the wait on the caller's side (for a wedged loop); timeouts
        belong in the coroutine, where they cancel the work.
        """
        if threading.get_ident() == self.ident or _running_async_library() is not None:
            check_caller(self.ident, what)
        if self.finished or self.pid != os.getpid():
            raise FacadeClosedError(f"{what}: this portal has stopped (closed, or left behind by fork())")
        job = _Job(fn, args)
        pending = self.pending
        pending.add(job)
        queued = got = False
        timeout = -1 if backstop_s is None else max(0.0, backstop_s)
        try:
            queued = self.soon(self._start_job, job, contextvars.copy_context())
            if queued:
                got = job.lock.acquire(True, timeout)
        except BaseException:  # KeyboardInterrupt (or a signal handler's exception), wherever it hit us
            if not job.done:
                self._abandon(job, cancel_grace_s)
            pending.discard(job)
            raise
        pending.discard(job)
        if not queued:
            raise FacadeClosedError(f"{what}: the facade's portal has stopped")
        if not got:
            self._abandon(job, cancel_grace_s)
            if not job.ok:
                raise PortalTimeout(f"{what}: no answer from the facade's event loop within {backstop_s} s")
        return job.outcome()

    def _abandon(self, job: _Job, grace: float) -> None:
        """Cancel *job* and give its cleanup (a STOP, say) up to *grace* seconds to run."""
        self.soon(job.cancel)
        try:
            job.lock.acquire(True, grace)
        except BaseException:
            pass  # interrupted again: stop waiting

    def run_sync(self, fn: Callable[..., Any], *args: Any, what: str = "this call") -> Any:
        """Run the plain function ``fn(*args)`` on the loop thread (it may touch loop state)."""
        return self.call(_as_async, fn, args, what=what)

    def submit(self, fn: Callable[..., Awaitable[Any]], *args: Any, wait: bool = True) -> Callable[[], Any]:
        """Start ``fn(*args)`` now; returns a function that waits for its outcome (with ``wait``).

        For callers that must schedule while holding a lock they cannot block under, or
        that must not block at all (``wait=False``: nobody collects the outcome).
        """
        job = _Job(fn, args)
        if wait:
            self.pending.add(job)
        if not self.soon(self._start_job, job, contextvars.copy_context()):
            self.pending.discard(job)
            job.finish(FacadeClosedError("the facade's portal has stopped"))
        if not wait:
            return lambda: None

        def collect() -> Any:
            try:
                job.lock.acquire()
            except BaseException:
                if not job.done:
                    self._abandon(job, 5.0)
                raise
            finally:
                self.pending.discard(job)
            return job.outcome()

        return collect

    def stop(self, deadline: float) -> bool:
        """Ask the owner task to tear down; wait until ``deadline``; True if the thread ended."""
        self.deadline = deadline
        if not self.thread.is_alive() and self.ident is None:
            return True
        if not self.soon(self._request_close):
            self.closing = True  # not started yet (or already gone)
        self.thread.join(max(0.0, deadline - time.monotonic()))
        if self.thread.is_alive():
            log.warning("the facade's portal did not stop within its deadline; cancelling it")
            self.soon(self._force_cancel)
            self.thread.join(1.0)
        return not self.thread.is_alive()


async def _as_async(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    return fn(*args)


def _refuse(*_: Any) -> None:
    raise RuntimeError("the portal loop is not running")


class Portal:
    """A lazily started, fork-aware ``PortalLoop`` holder; one per facade.

    ``setup(stack)`` builds the resource in the portal's owner task and registers its
    teardown on ``stack``; it runs again for each new loop (after ``fork()``, or after
    a failed start).
    """

    def __init__(
        self,
        setup: Setup,
        *,
        backend: str = "asyncio",
        name: str = "cosmonapse-portal",
        start_timeout_s: float = 30.0,
        close_timeout_s: float = 10.0,
        worker_threads: int = 40,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        self.backend = backend
        self.name = name
        self.start_timeout_s = start_timeout_s
        self.close_timeout_s = close_timeout_s
        self.worker_threads = worker_threads
        self._setup = setup
        self._lock = threading.Lock()
        self._loop: PortalLoop | None = None
        self._closed = False
        _PORTALS.add(self)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def live(self) -> PortalLoop | None:
        """The running loop of this process, or None (never started, closed, or forked)."""
        loop = self._loop
        if loop is None or loop.pid != os.getpid() or loop.finished:
            return None
        return loop

    def current(self, what: str = "this call") -> PortalLoop:
        """The running loop, started (and its resource set up) on first use."""
        loop = self._loop
        if loop is not None and not loop.finished and loop.pid == os.getpid():
            return loop
        check_caller(None, what)
        with self._lock:
            if self._closed:
                raise FacadeClosedError(f"{what}: the facade is closed")
            loop = self._loop
            if loop is not None and loop.pid != os.getpid():  # forked without the at-fork hook
                _ABANDONED.append(loop)
                loop = self._loop = None
            if loop is not None and loop.finished:  # its loop died: start over
                loop = self._loop = None
            if loop is None:
                loop = self._start_loop()
                self._loop = loop
            return loop

    def _start_loop(self) -> PortalLoop:
        loop = PortalLoop(self.name, self.backend, self._setup, self.worker_threads)
        loop.start()
        try:
            loop.ready.result(timeout=self.start_timeout_s)
        except concurrent.futures.TimeoutError:
            loop.stop(time.monotonic() + 1.0)
            raise PortalTimeout(f"the facade did not start within {self.start_timeout_s} s") from None
        except BaseException:
            loop.stop(time.monotonic() + 1.0)
            raise
        return loop

    def call(self, fn: Callable[..., Awaitable[Any]], *args: Any, what: str = "this call", **kw: Any) -> Any:
        return self.current(what).call(fn, *args, what=what, **kw)

    def close(self, timeout_s: float | None = None) -> bool:
        """Tear down (bounded by ``timeout_s``, default ``close_timeout_s``); idempotent and final."""
        timeout = self.close_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        loop = self._loop
        if loop is not None and threading.get_ident() == loop.ident:
            check_caller(loop.ident, "close()")
        with self._lock:
            self._closed = True
            loop, self._loop = self._loop, None
        if loop is None or loop.pid != os.getpid():
            return True
        return loop.stop(deadline)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        if self._loop is not None:
            _ABANDONED.append(self._loop)
            self._loop = None


def _after_fork_in_child() -> None:
    for portal in list(_PORTALS):
        portal._after_fork_in_child()


def _close_all_at_exit() -> None:
    for portal in list(_PORTALS):
        if portal.live is not None:
            try:
                portal.close()
            except Exception:
                log.warning("closing a facade at exit failed", exc_info=True)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all_at_exit)
