"""``RunnerPool``: bounded concurrency without a task spawn per job.

The Dendrite's core runs every inbound TASK, every handler call and every hook
as a job.  Spawning a task per job is the largest cost on the hot path, so jobs
are handed to runner tasks that wait for work: a job goes straight to an idle
runner if there is one, else a new runner is started while fewer than ``limit``
exist, else ``submit`` waits (FIFO) for a runner to come free (backpressure onto
the bus).  The hand-over is a slot and an event — no channel, so a runner that
finishes a job does not pay a scheduling round before it can take the next.
Runners beyond ``max_idle`` (default: all of them) retire when they run out of
work; keeping them avoids re-spawning on every burst, at a few KB per idle
runner.  All runners live in the owner's task group and end with it.

Each job runs in its own copy of the runner's starting context, so a
``ContextVar`` a job sets is never seen by the next job on the same runner
(as it would not be if each job were a task of its own).

Callers that must never wait (a STOP's bookkeeping on the router) use
``submit_nowait``: when every runner is busy the job goes into a bounded
backlog that runners drain before they go idle.

A job that raises is logged with its traceback — but a job that keeps failing
(a handler raising on every Signal) does not flood the log: ``FailureLog``
writes the first few tracebacks per job per window and counts the rest into
one summary line.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import time
import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from types import CoroutineType
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup

from .prims import Prims, Waitable

__all__ = [
    "Cancellable",
    "FailureLog",
    "Job",
    "JobFn",
    "JobScope",
    "RunnerPool",
    "call_any",
    "in_context",
    "is_async_callable",
    "job_scope",
]

log: logging.Logger = logging.getLogger("cosmonapse.runners")

JobFn = Callable[..., Awaitable[Any]]
Job = tuple[JobFn, tuple[Any, ...]]
#: Names the job that failed, for the log and for counting its failures: ``describe(fn, args)``.
Describe = Callable[[JobFn, tuple[Any, ...]], str]

#: Tracebacks logged per failing job in one window, and the window (seconds).
FAILURE_BURST = 5
FAILURE_WINDOW_S = 60.0
#: Distinct failing jobs tracked at once (the least recent is summed up and forgotten).
FAILURE_KEYS = 256
#: Jobs ``submit_nowait`` queues behind busy runners before it refuses.
DEFAULT_BACKLOG = 10_000


def describe_fn(fn: Callable[..., object], args: tuple[Any, ...] = ()) -> str:
    """``module.qualname`` of *fn* (its repr when it has none)."""
    name = getattr(fn, "__qualname__", None)
    if name is None:
        return repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module else str(name)


class _Failures:
    __slots__ = ("last", "logged", "suppressed", "window_end")

    def __init__(self, window_end: float) -> None:
        self.window_end = window_end
        self.logged = 0
        self.suppressed = 0
        self.last = ""


class FailureLog:
    """Failures of jobs, logged with a rate limit per job.

    For each job (by name) the first ``burst`` failures of a ``window_s`` window are
    logged at ERROR with their traceback; later ones in the window are only counted.
    The count is written as one summary line ("... N more failures suppressed") when
    the job next fails after its window, when the job is forgotten (more than
    ``max_keys`` failing jobs), and at ``flush()`` (the pool closing).
    """

    __slots__ = ("_entries", "_log", "burst", "max_keys", "suppressed", "window_s")

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = FAILURE_BURST,
        window_s: float = FAILURE_WINDOW_S,
        max_keys: int = FAILURE_KEYS,
    ) -> None:
        self._log = logger
        self.burst: int = burst
        self.window_s: float = window_s
        self.max_keys: int = max_keys
        self._entries: dict[str, _Failures] = {}
        #: Failures counted but not logged with a traceback, in all.
        self.suppressed: int = 0

    def failed(
        self, what: str, exc: BaseException, *, detail: str = "", extra: Mapping[str, object] | None = None
    ) -> None:
        """Record one failure of *what* (logged with its traceback unless over the burst).

        *detail* (which Signal, which trace) is added to a logged line but is not part
        of the key: one handler failing on many Signals is one job.
        """
        now = time.monotonic()
        entries = self._entries
        entry = entries.pop(what, None)  # re-inserted last: the dict stays in recency order
        if entry is None or now >= entry.window_end:
            if entry is not None:
                self._summary(what, entry)
            entry = _Failures(now + self.window_s)
        entries[what] = entry
        if len(entries) > self.max_keys:
            oldest = next(iter(entries))
            self._summary(oldest, entries.pop(oldest))
        if entry.logged < self.burst:
            entry.logged += 1
            more = ""
            if entry.logged == self.burst:
                more = f" (further failures within {self.window_s:g}s are counted, not logged)"
            self._log.error("%s raised%s%s", what, detail, more, exc_info=exc, extra=extra)
        else:
            entry.suppressed += 1
            entry.last = f"{type(exc).__name__}: {exc}"
            self.suppressed += 1

    def _summary(self, what: str, entry: _Failures) -> None:
        if entry.suppressed:
            self._log.error(
                "%s raised %d more times (tracebacks suppressed); the last: %s",
                what,
                entry.suppressed,
                entry.last[:500],
            )

    def flush(self) -> None:
        """Write the pending summaries and forget every job."""
        entries, self._entries = self._entries, {}
        for what, entry in entries.items():
            self._summary(what, entry)


class _Slot:
    """Where an idle runner waits for its next job (``job is None`` when woken means: end).

    One per runner, re-armed before each idle wait: the loop's one-waiter events
    are cleared and reused, anything else (anyio's, outside a known loop) replaced.
    """

    __slots__ = ("_new_event", "event", "job")

    def __init__(self, new_event: Callable[[], Waitable]) -> None:
        self._new_event = new_event
        self.event = new_event()
        self.job: Job | None = None

    def rearm(self) -> None:
        self.job = None
        event = self.event
        clear = getattr(event, "clear", None)  # prims' waiters have one; anyio.Event has not
        if clear is not None:
            clear()
        elif event.is_set():
            self.event = self._new_event()


class Cancellable(Protocol):
    """What STOP cancels for a trace's work: a cancel scope, or a ``JobScope``."""

    @property
    def cancel_called(self) -> bool: ...

    def cancel(self) -> None: ...


class JobScope:
    """The cancel handle of one job on a scoped runner: ``cancel()`` cancels that job only.

    A scoped runner keeps one cancel scope open across its jobs instead of entering
    one per job (on trio a scope costs about as much as the rest of a TASK's
    hand-over).  ``cancel()`` reaches the runner's scope only while this job runs;
    the runner checks the scope after every job and opens a fresh one before the
    next job whenever it was cancelled, so a cancel never reaches another job.
    """

    __slots__ = ("_live", "_scope", "cancel_called")

    def __init__(self, scope: anyio.CancelScope) -> None:
        self._scope = scope
        self._live = True
        self.cancel_called: bool = False

    def cancel(self) -> None:
        """Cancel this job (a no-op once it is over)."""
        if self._live and not self.cancel_called:
            self.cancel_called = True
            self._scope.cancel()

    def close(self) -> None:
        """The job is over: ``cancel()`` does nothing from now on."""
        self._live = False


_NO_SCOPE = contextlib.nullcontext()  # an unscoped runner's "scope" (reusable)

#: The running job's ``JobScope`` on a scoped runner (None elsewhere).
job_scope: contextvars.ContextVar[JobScope | None] = contextvars.ContextVar(
    "cosmonapse_job_scope", default=None
)


def is_async_callable(fn: Any) -> bool:
    """A coroutine function, a ``partial`` of one, or an object whose ``__call__`` is one."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


async def call_any(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, awaited when it returns an awaitable (user handlers and hooks are either)."""
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


@types.coroutine
def in_context(coro: Coroutine[Any, Any, Any], context: contextvars.Context) -> Generator[Any, Any, Any]:
    """Await *coro* with every step of it run inside *context*.

    A task runs its coroutine's steps in the task's own context; stepping the job's
    coroutine through ``context.run`` instead gives each job a context of its own
    on a shared runner task.  Cancellation and other exceptions are thrown in the
    same way, so the job sees exactly what the runner task sees.
    """
    run = context.run
    send, throw = coro.send, coro.throw
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            if error is None:
                yielded = run(send, value)
            else:
                exc, error = error, None
                yielded = run(throw, exc)
        except StopIteration as done:
            return done.value
        try:
            value = yield yielded
        except BaseException as exc:  # cancellation, GeneratorExit: handed to the job
            error = exc


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class RunnerPool:
    """At most ``limit`` jobs run at once, on reusable runner tasks in *tg*."""

    __slots__ = (
        "_backlog",
        "_closed",
        "_describe",
        "_event",
        "_idle",
        "_scope_class",
        "_tg",
        "_waiters",
        "backlog_limit",
        "busy",
        "failures",
        "limit",
        "max_idle",
        "name",
        "runners",
    )

    def __init__(
        self,
        tg: TaskGroup,
        limit: int,
        *,
        max_idle: int | None = None,
        name: str = "runner",
        backlog: int = DEFAULT_BACKLOG,
        describe: Describe = describe_fn,
        scoped: bool = False,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._tg = tg
        self.limit: int = limit
        self.max_idle: int = limit if max_idle is None else max_idle
        self.name: str = name
        self.runners: int = 0
        self.busy: int = 0
        self._idle: list[_Slot] = []  # LIFO: the most recently busy runner is reused first
        prims = Prims.current_or_generic()
        self._event = prims.waiter  # the loop's own one-waiter event: built per hand-over
        #: scoped: each job runs under a cancel scope, its ``JobScope`` in ``job_scope``
        self._scope_class: type[anyio.CancelScope] | None = prims.cancel_scope if scoped else None
        self._waiters: deque[Waitable] = deque()  # submitters waiting for a free runner
        self._backlog: deque[Job] = deque()  # submit_nowait's jobs behind busy runners
        self.backlog_limit: int = backlog
        self._describe = describe
        #: The rate-limited log of failing jobs (its ``suppressed`` counts what it did not log).
        self.failures: FailureLog = FailureLog(log)
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def saturated(self) -> bool:
        """True when a new job would have to wait for a runner."""
        return not self._idle and self.runners >= self.limit

    async def submit(self, fn: JobFn, *args: Any) -> None:
        """Run ``fn(*args)`` on a runner; waits while ``limit`` jobs are running.

        Raises ``anyio.ClosedResourceError`` once the pool is closed.
        """
        job = (fn, args)
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._hand_over(job):
                return
            ev = self._event()
            self._waiters.append(ev)
            try:
                await ev.wait()
            except BaseException:
                try:
                    self._waiters.remove(ev)
                except ValueError:  # we were woken for a free runner: pass the turn on
                    self._wake_waiter()
                raise

    def submit_nowait(self, fn: JobFn, *args: Any) -> bool:
        """Run ``fn(*args)`` on a free runner, or queue it in the backlog; never waits.

        False (nothing queued) only when ``backlog_limit`` jobs are queued already.
        Raises ``anyio.ClosedResourceError`` once the pool is closed.
        """
        if self._closed:
            raise anyio.ClosedResourceError
        job = (fn, args)
        if not self._backlog and not self._waiters and self._hand_over(job):
            return True
        if len(self._backlog) < self.backlog_limit:
            self._backlog.append(job)
            return True
        return False

    @property
    def queued(self) -> int:
        """Jobs in the backlog now."""
        return len(self._backlog)

    def try_submit(self, fn: JobFn, *args: Any) -> bool:
        """Run ``fn(*args)`` if a runner is free (or may be started) now; False otherwise.

        For callers that cannot wait (sync code); they choose what to do when full.
        """
        if self._closed or self._waiters:
            return False  # waiting submitters go first
        return self._hand_over((fn, args))

    def try_hand_over(self, fn: JobFn, *args: Any) -> bool:
        """Run ``fn(*args)`` on an idle runner if there is one now; False (nothing done) otherwise.

        Never starts a runner: a caller that hands jobs over at once (a bus reader) leaves
        the start of new runners to the path that can also wait for them.
        """
        if self._closed or self._waiters or self._backlog or not self._idle:
            return False
        slot = self._idle.pop()
        slot.job = (fn, args)
        slot.event.set()
        return True

    def _hand_over(self, job: Job) -> bool:
        if self._idle:
            slot = self._idle.pop()
            slot.job = job
            slot.event.set()
            return True
        if self.runners < self.limit:
            self.runners += 1
            try:
                self._tg.start_soon(self._runner, job, name=self.name)
            except BaseException:
                self.runners -= 1
                raise
            return True
        return False

    def _wake_waiter(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()

    async def _runner(self, job: Job | None) -> None:
        base = contextvars.copy_context()  # what every job on this runner starts from
        scope_class = self._scope_class
        slot = _Slot(self._event)
        try:
            while job is not None:
                # scoped: one cancel scope across this runner's jobs, until a job is cancelled
                scope = scope_class() if scope_class is not None else None
                handle: JobScope | None = None
                with scope if scope is not None else _NO_SCOPE:
                    while job is not None:
                        fn, args = job
                        self.busy += 1
                        context = base.copy()
                        if scope is not None:
                            handle = JobScope(scope)
                            context.run(job_scope.set, handle)
                        try:
                            awaitable = fn(*args)
                            coro = awaitable if type(awaitable) is CoroutineType else _as_coroutine(awaitable)
                            await in_context(coro, context)
                        except Exception as exc:
                            self.failures.failed(f"{self.name} job {self._describe(fn, args)}", exc)
                        finally:
                            self.busy -= 1
                            if handle is not None:
                                handle.close()
                        # only a job's JobScope reaches this scope, so its flag says whether the scope
                        # was cancelled (trio's scope.cancel_called also reads the clock)
                        if handle is not None and handle.cancel_called:
                            break  # the next job waits for a fresh scope
                        job = await self._next_job(slot)
                if handle is not None and handle.cancel_called:  # a job was cancelled (or swallowed it)
                    job = await self._next_job(slot)
        finally:
            self.runners -= 1
            if not self._closed:
                self._wake_waiter()  # a retiring runner leaves room for a new one

    async def _next_job(self, slot: _Slot) -> Job | None:
        """The backlog's next job, or wait idle in *slot* for one; None: this runner ends."""
        if self._backlog and not self._closed:
            return self._backlog.popleft()
        if self._closed or self.runners - self.busy > self.max_idle:
            return None
        slot.rearm()
        self._idle.append(slot)
        self._wake_waiter()
        try:
            await slot.event.wait()
        except BaseException:
            if slot in self._idle:
                self._idle.remove(slot)
            raise
        return slot.job

    def close(self) -> None:
        """Refuse new jobs; idle runners end (the rest end with the task group)."""
        self._closed = True
        self._backlog.clear()
        self.failures.flush()
        idle, self._idle = self._idle, []
        for slot in idle:
            slot.event.set()  # job stays None: the runner ends
        while self._waiters:
            self._waiters.popleft().set()  # waiting submitters see the pool closed
